"""Who may see the dashboard: loopback by default, anything else only with an access token.

Run figures, client names and configs are not for everyone on a network. The dashboard
therefore binds to a loopback address unless told otherwise, and refuses any other
address unless it is given an access token — which it then requires on every request:

- as ``Authorization: Bearer TOKEN`` (scripts), or
- once as ``?token=TOKEN`` in the address the dashboard prints; the page then keeps it in
  a cookie (HttpOnly, SameSite=Strict) and drops it from the address bar.

A token given on loopback is required there too. Tokens are compared in constant time.
On loopback without a token, the ``Host`` header must name a loopback host, so that a web
page elsewhere cannot reach the dashboard through DNS rebinding.

Example:
    >>> check_bind("127.0.0.1", "")
    >>> check_bind("0.0.0.0", "")
    Traceback (most recent call last):
    ...
    sheaf.core.errors.ConfigError: refusing to serve the dashboard on 0.0.0.0 without an access token: anyone who can reach that address would see your runs; pass --token TOKEN (at least 16 characters, e.g. from 'python -c "import secrets; print(secrets.token_urlsafe())"') or serve on 127.0.0.1
    >>> is_loopback("localhost"), is_loopback("::1"), is_loopback("192.168.1.5")
    (True, True, False)
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Awaitable, Callable, MutableMapping
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import parse_qsl, urlencode

from sheaf.core.errors import ConfigError

__all__ = ["COOKIE", "MIN_TOKEN_LENGTH", "AccessMiddleware", "check_bind", "is_loopback"]

#: The cookie the page keeps the token in once it was given in the address.
COOKIE = "sheaf_dashboard_token"

#: Tokens shorter than this are refused: they could be guessed.
MIN_TOKEN_LENGTH = 16

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address, IPv6 with or without brackets) is this machine only."""
    host = host.strip().strip("[]").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_bind(host: str, token: str) -> None:
    """Refuse to serve on a non-loopback address without an access token, or with a weak one.

    Raises:
        ConfigError: if ``host`` is reachable from other machines and ``token`` is empty, or
            if ``token`` is shorter than :data:`MIN_TOKEN_LENGTH` or holds other characters
            than letters, digits and ``-_.~``.
    """
    if token and len(token) < MIN_TOKEN_LENGTH:
        raise ConfigError(f"the access token must be at least {MIN_TOKEN_LENGTH} characters long, got {len(token)}")
    if token and not all(c.isascii() and (c.isalnum() or c in "-_.~") for c in token):
        raise ConfigError("the access token may hold only letters, digits and - _ . ~ (it travels in a cookie)")
    if not token and not is_loopback(host):
        raise ConfigError(
            f"refusing to serve the dashboard on {host} without an access token: anyone who can reach that "
            f"address would see your runs; pass --token TOKEN (at least {MIN_TOKEN_LENGTH} characters, e.g. from "
            "'python -c \"import secrets; print(secrets.token_urlsafe())\"') or serve on 127.0.0.1"
        )


def _header(scope: Scope, name: bytes) -> str:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return ""


def _host_name(host_header: str) -> str:
    if host_header.startswith("["):
        return host_header[1 : host_header.find("]")] if "]" in host_header else host_header
    return host_header.rsplit(":", 1)[0] if host_header.count(":") == 1 else host_header


class AccessMiddleware:
    """ASGI middleware: the token check (when there is a token) and the loopback Host check.

    Args:
        app: the dashboard's application.
        token: the access token; empty on loopback without one.
    """

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self.token = token

    def _presented(self, scope: Scope) -> tuple[str, bool]:
        """The token the request carries, and whether it came in the query string."""
        auth = _header(scope, b"authorization")
        if auth.lower().startswith("bearer "):
            return auth[7:].strip(), False
        query = dict(parse_qsl(bytes(scope.get("query_string", b"")).decode("latin-1")))
        if "token" in query:
            return query["token"], True
        cookie = SimpleCookie()
        try:
            cookie.load(_header(scope, b"cookie"))
        except Exception:  # a malformed cookie header is no token
            return "", False
        morsel = cookie.get(COOKIE)
        return (morsel.value if morsel is not None else ""), False

    async def _refuse(self, send: Send, status: int, text: str) -> None:
        body = text.encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"text/plain; charset=utf-8"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if not self.token:
            if not is_loopback(_host_name(_header(scope, b"host"))):
                await self._refuse(
                    send, 403, "this dashboard answers only requests addressed to this machine's loopback"
                )
                return
            await self.app(scope, receive, send)
            return
        presented, in_query = self._presented(scope)
        if not hmac.compare_digest(presented.encode(), self.token.encode()):
            await self._refuse(send, 401, "access token required: open the address 'sheaf ui' printed, with ?token=")
            return
        if in_query:  # keep it in a cookie, and out of the address bar and the history
            rest = [
                (k, v) for k, v in parse_qsl(bytes(scope.get("query_string", b"")).decode("latin-1")) if k != "token"
            ]
            location = scope.get("path", "/") + (("?" + urlencode(rest)) if rest else "")
            cookie = f"{COOKIE}={self.token}; HttpOnly; SameSite=Strict; Path=/"
            await send(
                {
                    "type": "http.response.start",
                    "status": 303,
                    "headers": [
                        (b"location", location.encode()),
                        (b"set-cookie", cookie.encode()),
                        (b"content-length", b"0"),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": b""})
            return
        await self.app(scope, receive, send)
