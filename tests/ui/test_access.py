"""Who may see the dashboard: loopback by default; elsewhere only with a token, then always."""

from __future__ import annotations

import urllib.error
import urllib.request
from pathlib import Path

import pytest

pytest.importorskip("uvicorn", reason="the dashboard's extra is not installed: pip install 'sheaf[ui]'")

from sheaf.core.errors import ConfigError
from sheaf.ui.access import COOKIE, check_bind, is_loopback
from sheaf.ui.server import Dashboard

TOKEN = "a-long-enough-token-0123456789"


def fetch(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, headers=headers or {})

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: object, **kwargs: object) -> None:
            return None

    opener = urllib.request.build_opener(NoRedirect)
    try:
        with opener.open(request) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


@pytest.mark.parametrize(("host", "loopback"), [("127.0.0.1", True), ("127.3.2.1", True), ("localhost", True),
                                                ("::1", True), ("[::1]", True), ("0.0.0.0", False), ("10.1.2.3", False),
                                                ("example.org", False), ("::", False)])  # fmt: skip
def test_only_loopback_counts_as_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.5", "::", "my-laptop.local"])
def test_another_address_is_refused_without_a_token(host: str) -> None:
    with pytest.raises(ConfigError, match="refusing to serve the dashboard"):
        check_bind(host, "")
    check_bind(host, TOKEN)


@pytest.mark.parametrize("token", ["short", "has spaces in it here", "semi;colon;cookie;breaker"])
def test_weak_or_unsafe_tokens_are_refused(token: str) -> None:
    with pytest.raises(ConfigError, match="token"):
        check_bind("127.0.0.1", token)


def test_the_cli_refuses_a_public_address_without_a_token(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from sheaf.cli.app import app

    result = CliRunner().invoke(app, ["ui", str(tmp_path), "--host", "0.0.0.0"])

    assert result.exit_code == 2
    assert "refusing to serve the dashboard on 0.0.0.0 without an access token" in result.output


def test_a_token_is_required_on_every_request_and_kept_in_a_cookie(tmp_path: Path) -> None:
    with Dashboard(tmp_path, port=0, token=TOKEN) as board:
        api = board.url + "api/runs"
        assert fetch(api)[0] == 401
        assert fetch(api, {"Authorization": "Bearer wrong-token-0123456789"})[0] == 401
        assert fetch(api, {"Authorization": f"Bearer {TOKEN}"})[0] == 200
        status, headers, _ = fetch(board.url + f"?token={TOKEN}")
        assert status == 303 and headers["location"] == "/"  # the token leaves the address bar
        cookie = headers["set-cookie"]
        assert cookie.startswith(f"{COOKIE}={TOKEN}") and "HttpOnly" in cookie and "SameSite=Strict" in cookie
        assert fetch(api, {"Cookie": f"{COOKIE}={TOKEN}"})[0] == 200
        assert fetch(board.url + "static/dashboard.js")[0] == 401  # static files too


def test_without_a_token_only_requests_addressed_to_loopback_are_answered(tmp_path: Path) -> None:
    with Dashboard(tmp_path, port=0) as board:
        assert fetch(board.url + "api/runs")[0] == 200
        assert fetch(board.url + "api/runs", {"Host": f"localhost:{board.port}"})[0] == 200
        # a page of another site whose name was made to resolve to 127.0.0.1 (DNS rebinding)
        assert fetch(board.url + "api/runs", {"Host": f"attacker.example:{board.port}"})[0] == 403


def test_every_response_forbids_framing_sniffing_and_foreign_scripts(tmp_path: Path) -> None:
    with Dashboard(tmp_path, port=0) as board:
        _, headers, body = fetch(board.url)
    assert b"<title>sheaf dashboard</title>" in body
    assert "script-src 'self'" in headers["content-security-policy"]
    assert headers["x-frame-options"] == "DENY" and headers["x-content-type-options"] == "nosniff"
