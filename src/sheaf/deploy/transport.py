"""gRPC plumbing shared by server and client: method paths, limits, TLS, channels.

TLS is the default: the server presents a certificate signed by the deployment's CA, and
clients verify it against ``ca.pem``. ``insecure=True`` (``--insecure``) speaks plaintext
and is meant for experiments on one machine; requests are still signed, but anyone on
the path can read the model and updates.

The method paths come from the service in the generated descriptor, so they cannot drift
from ``federation.proto``.

Example:
    >>> METHODS["PushResult"]
    '/sheaf.v1.Federation/PushResult'
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import grpc
import grpc.aio

from sheaf.core.errors import ConfigError
from sheaf.deploy._proto import federation_pb2 as pb
from sheaf.deploy.chunks import MAX_MESSAGE_BYTES

__all__ = ["METHODS", "SERVICE_NAME", "client_channel", "client_options", "server_credentials", "server_options"]

_SERVICE = pb.DESCRIPTOR.services_by_name["Federation"]

#: The service's full name.
SERVICE_NAME: str = _SERVICE.full_name

#: Method name -> gRPC path, e.g. ``"Join" -> "/sheaf.v1.Federation/Join"``.
METHODS: dict[str, str] = {method.name: f"/{_SERVICE.full_name}/{method.name}" for method in _SERVICE.methods}


def server_options() -> list[tuple[str, Any]]:
    """Channel arguments of the server: message limits, and tolerance of client keepalives."""
    return [
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_recv_ping_interval_without_data_ms", 10_000),
        ("grpc.http2.max_ping_strikes", 0),
        ("grpc.so_reuseport", 0),
        # Without BDP probing the receive windows stay small, so uploads that arrive faster
        # than the server checks them wait in the clients' send buffers, not in the server's
        # memory: 785 -> 557 MB peak with 40 clients of a 4 MB model, at the same speed
        # (benchmarks/server_load.py --clients 40 --processes 2).
        ("grpc.http2.bdp_probe", 0),
    ]


def client_options() -> list[tuple[str, Any]]:
    """Channel arguments of a client: message limits, and keepalives to notice dead links."""
    return [
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ("grpc.keepalive_time_ms", 30_000),
        ("grpc.keepalive_timeout_ms", 20_000),
        ("grpc.keepalive_permit_without_calls", 1),
        # reconnect quickly after a server restart; sheaf's own backoff paces the retries
        ("grpc.initial_reconnect_backoff_ms", 200),
        ("grpc.max_reconnect_backoff_ms", 2_000),
    ]


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{what} {str(path)!r} not found; 'sheaf keys init' creates it") from None


def server_credentials(cert: Path, key: Path) -> grpc.ServerCredentials:
    """TLS credentials from the server's certificate and private key (PEM files).

    Raises:
        ConfigError: if a file is missing.
    """
    return grpc.ssl_server_credentials([(_read(key, "server key"), _read(cert, "server certificate"))])


def client_channel(target: str, *, ca: Path | None, insecure: bool) -> grpc.aio.Channel:
    """An asyncio channel to the server: TLS verified against ``ca``, or plaintext.

    Raises:
        ConfigError: if TLS is asked for without a CA certificate, or the file is missing.
    """
    if insecure:
        return grpc.aio.insecure_channel(target, options=client_options())
    if ca is None:
        raise ConfigError("a TLS connection needs the deployment's CA certificate (--ca ca.pem), or pass --insecure")
    credentials = grpc.ssl_channel_credentials(root_certificates=_read(ca, "CA certificate"))
    return grpc.aio.secure_channel(target, credentials, options=client_options())
