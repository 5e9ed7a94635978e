"""``--insecure``: plaintext instead of TLS, loudly, and only on loopback unless asked twice.

Without TLS anyone on the network path between server and clients reads the global model
and every client's update, and can alter tasks and results in flight (requests stay
signed, but replies — the tasks a client trains on — are not). That is fine for an
experiment on one machine and nowhere else, so:

- a server or client started with ``--insecure`` says so on standard error and in its log
  (:data:`PLAINTEXT_WARNING`), every time;
- on an address that is not a loopback one — a server listening on ``0.0.0.0`` or a LAN
  address, a client dialling another machine — ``--insecure`` alone is refused with one
  line; ``--insecure-non-loopback`` as well says that this is meant.

Example:
    >>> is_loopback("127.0.0.1:7443"), is_loopback("localhost:7443"), is_loopback("[::1]:7443")
    (True, True, True)
    >>> is_loopback("0.0.0.0:7443"), is_loopback("fl.example.org:7443")
    (False, False)
    >>> check_plaintext("0.0.0.0:7443", role="server", allow_non_loopback=False)
    Traceback (most recent call last):
    ...
    sheaf.core.errors.ConfigError: --insecure on 0.0.0.0:7443, which is not a loopback address: anyone on the network path could read and alter the model and every update; use TLS (leave out --insecure), or add --insecure-non-loopback if you mean it
"""

from __future__ import annotations

import ipaddress

from sheaf.core.errors import ConfigError

__all__ = ["PLAINTEXT_WARNING", "check_plaintext", "is_loopback"]

#: What a plaintext server or client says when it starts.
PLAINTEXT_WARNING = (
    "WARNING: --insecure: no TLS. Anyone on the network path can read the model and every update, "
    "and alter what the server sends. For experiments on one machine only."
)


def _host(address: str) -> str:
    host = address.rsplit(":", 1)[0] if address.count(":") == 1 or address.startswith("[") else address
    return host.strip("[]").lower()


def is_loopback(address: str) -> bool:
    """Whether ``host:port`` names this machine only (``localhost``, ``127.0.0.0/8``, ``::1``)."""
    host = _host(address)
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve anywhere
        return False


def check_plaintext(address: str, *, role: str, allow_non_loopback: bool) -> str:
    """The warning a plaintext ``role`` on ``address`` must show; refuse a non-loopback one.

    Args:
        address: where the server listens, or the server a client dials.
        role: ``server`` or ``client``, for the message.
        allow_non_loopback: whether ``--insecure-non-loopback`` was given.

    Raises:
        ConfigError: if ``address`` is not a loopback address and plaintext there was not
            asked for explicitly.
    """
    if not is_loopback(address) and not allow_non_loopback:
        raise ConfigError(
            f"--insecure on {address}, which is not a loopback address: anyone on the network path could read "
            "and alter the model and every update; use TLS (leave out --insecure), or add --insecure-non-loopback "
            "if you mean it"
        )
    return f"{PLAINTEXT_WARNING} ({role} on {address})"
