"""The gRPC transport: method paths, limits, TLS, and both sides of the seam over gRPC.

TLS is the default: the server presents a certificate signed by the deployment's CA, and
clients verify it against ``ca.pem``. ``insecure=True`` (``--insecure``) speaks plaintext
and is meant for experiments on one machine; requests are still signed, but anyone on
the path can read the model and updates.

The method paths come from the service in the generated descriptor, so they cannot drift
from ``federation.proto``.

This module implements :mod:`sheaf.deploy.rpc` over ``grpc.aio``, and is the only place
gRPC's types meet sheaf's: :class:`GrpcChannel` turns every ``AioRpcError`` into an
:class:`~sheaf.deploy.rpc.RpcError` (client side), and a handler's
:meth:`~sheaf.deploy.rpc.CallContext.abort` becomes gRPC's abort with the same code
(server side). :class:`GrpcServerTransport` runs the asyncio gRPC server on its own thread.

Example:
    >>> METHODS["PushResult"]
    '/sheaf.v1.Federation/PushResult'
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, NoReturn

import grpc
import grpc.aio

from sheaf.core.errors import ConfigError
from sheaf.deploy._proto import federation_pb2 as pb
from sheaf.deploy.chunks import MAX_MESSAGE_BYTES
from sheaf.deploy.rpc import (
    Handlers,
    Listening,
    Metadata,
    ReplyStreamHandler,
    Requests,
    RequestStreamHandler,
    RpcError,
    Service,
    StatusCode,
    UnaryHandler,
)

__all__ = [
    "METHODS",
    "SERVICE_NAME",
    "GrpcChannel",
    "GrpcServerTransport",
    "client_channel",
    "client_options",
    "grpc_handler",
    "server_credentials",
    "server_options",
]

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


def client_channel(
    target: str, *, ca: Path | None, insecure: bool, options: Iterable[tuple[str, Any]] = ()
) -> GrpcChannel:
    """A channel to the server over gRPC: TLS verified against ``ca``, or plaintext.

    Args:
        target: ``host:port`` of the server.
        ca: the deployment's CA certificate.
        insecure: plaintext instead of TLS.
        options: channel arguments added to (and overriding) :func:`client_options`.

    Raises:
        ConfigError: if TLS is asked for without a CA certificate, or the file is missing.
    """
    arguments = list({**dict(client_options()), **dict(options)}.items())  # gRPC takes the first of a repeated key
    if insecure:
        return GrpcChannel(grpc.aio.insecure_channel(target, options=arguments))
    if ca is None:
        raise ConfigError("a TLS connection needs the deployment's CA certificate (--ca ca.pem), or pass --insecure")
    credentials = grpc.ssl_channel_credentials(root_certificates=_read(ca, "CA certificate"))
    return GrpcChannel(grpc.aio.secure_channel(target, credentials, options=arguments))


# Client side ------------------------------------------------------------------------------
@contextlib.contextmanager
def _translated(method: str) -> Iterator[None]:
    """The one place a gRPC error becomes sheaf's: same code, same details."""
    try:
        yield
    except grpc.aio.AioRpcError as exc:
        raise RpcError(StatusCode[exc.code().name], exc.details() or "", method=method) from None


class GrpcChannel:
    """A :class:`~sheaf.deploy.rpc.Channel` over a ``grpc.aio`` channel.

    Args:
        channel: the gRPC channel (see :func:`client_channel`).
    """

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self._channel = channel

    async def unary_unary(
        self, method: str, request: bytes, *, metadata: Metadata, timeout: float | None = None
    ) -> bytes:
        """One request, one reply (raises :class:`~sheaf.deploy.rpc.RpcError`)."""
        call: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = self._channel.unary_unary(method)
        with _translated(method):
            reply: bytes = await call(request, metadata=tuple(metadata), timeout=timeout)
        return reply

    async def unary_stream(
        self, method: str, request: bytes, *, metadata: Metadata, timeout: float | None = None
    ) -> AsyncIterator[bytes]:
        """One request, a stream of replies (raises :class:`~sheaf.deploy.rpc.RpcError`)."""
        call: grpc.aio.UnaryStreamMultiCallable[bytes, bytes] = self._channel.unary_stream(method)
        with _translated(method):
            async for message in call(request, metadata=tuple(metadata), timeout=timeout):
                yield message

    async def stream_unary(
        self, method: str, requests: Requests, *, metadata: Metadata, timeout: float | None = None
    ) -> bytes:
        """A stream of requests, one reply (raises :class:`~sheaf.deploy.rpc.RpcError`)."""
        call: grpc.aio.StreamUnaryMultiCallable[bytes, bytes] = self._channel.stream_unary(method)
        messages = aiter(requests) if isinstance(requests, AsyncIterable) else iter(requests)
        with _translated(method):
            reply: bytes = await call(messages, metadata=tuple(metadata), timeout=timeout)
        return reply

    async def close(self) -> None:
        """Close the gRPC channel; calls in progress are cancelled."""
        await self._channel.close()


# Server side ------------------------------------------------------------------------------
class _GrpcContext:
    """A gRPC servicer context seen as a :class:`~sheaf.deploy.rpc.CallContext`."""

    def __init__(self, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        self._context = context

    def metadata(self) -> Metadata:
        return [(str(key), value) for key, value in (self._context.invocation_metadata() or ())]

    def peer(self) -> str:
        return str(self._context.peer())

    async def abort(self, code: StatusCode, details: str) -> NoReturn:
        # The one place a sheaf status becomes gRPC's.
        await self._context.abort(grpc.StatusCode[code.name], details)
        raise AssertionError("unreachable: abort raises")  # pragma: no cover


_Context = grpc.aio.ServicerContext[Any, Any]


def _unary(handler: UnaryHandler) -> Callable[[bytes, _Context], Awaitable[bytes]]:
    async def call(request: bytes, context: _Context) -> bytes:
        return await handler(request, _GrpcContext(context))

    return call


def _replies(handler: ReplyStreamHandler) -> Callable[[bytes, _Context], AsyncIterator[bytes]]:
    async def call(request: bytes, context: _Context) -> AsyncIterator[bytes]:
        async for message in handler(request, _GrpcContext(context)):
            yield message

    return call


def _requests(handler: RequestStreamHandler) -> Callable[[AsyncIterator[bytes], _Context], Awaitable[bytes]]:
    async def call(requests: AsyncIterator[bytes], context: _Context) -> bytes:
        return await handler(requests, _GrpcContext(context))

    return call


class _PathHandler(grpc.GenericRpcHandler):
    """Finds a method's handler by its full path (``/package.Service/Method``)."""

    def __init__(self, methods: dict[str, grpc.RpcMethodHandler[Any, Any]]) -> None:
        self._methods = methods

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler[Any, Any] | None:
        return self._methods.get(handler_call_details.method)


def grpc_handler(handlers: Handlers) -> grpc.GenericRpcHandler:
    """A generic handler serving ``handlers`` on raw bytes (gRPC (de)serialises nothing)."""
    methods: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}
    for path, unary in handlers.unary_unary.items():
        methods[path] = grpc.unary_unary_rpc_method_handler(_unary(unary))
    for path, replies in handlers.unary_stream.items():
        methods[path] = grpc.unary_stream_rpc_method_handler(_replies(replies))
    for path, requests in handlers.stream_unary.items():
        methods[path] = grpc.stream_unary_rpc_method_handler(_requests(requests))
    return _PathHandler(methods)


class GrpcServerTransport:
    """The asyncio gRPC server, on its own thread and event loop (``run_server``'s default).

    Args:
        address: ``host:port`` to listen on (port 0 picks a free one).
        credentials: the server's TLS credentials; None speaks plaintext.
    """

    def __init__(self, address: str, credentials: grpc.ServerCredentials | None) -> None:
        self.address = address
        self.credentials = credentials
        self._port = 0
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread: threading.Thread | None = None

    def start(self, service: Service) -> Listening:
        """Listen and serve ``service`` on a new thread; returns once it listens.

        Raises:
            ConfigError: if the address cannot be bound.
        """
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main(service)), name="sheaf-grpc", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            raise ConfigError(f"cannot listen on {self.address}: {self._error}; is the port in use?") from None
        host = self.address.rsplit(":", 1)[0]
        return Listening(f"{host}:{self._port}", self._port, self.credentials is not None)

    async def _main(self, service: Service) -> None:
        try:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            service.bind(self._loop)
            server = grpc.aio.server(options=server_options())
            server.add_generic_rpc_handlers((grpc_handler(service.handlers()),))
            if self.credentials is None:
                self._port = server.add_insecure_port(self.address)
            else:
                self._port = server.add_secure_port(self.address, self.credentials)
            if self._port == 0:
                raise RuntimeError("address could not be bound")
            await server.start()
        except Exception as exc:  # reported to the starting thread as one clear error
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        await self._stop.wait()
        await server.stop(grace=1.0)

    def linger(self, seconds: float) -> None:
        """Keep serving ``seconds`` longer, so clients polling now hear that the run is over."""
        time.sleep(seconds)

    def stop(self) -> None:
        """Stop the server (a second's grace for calls in progress) and its thread."""
        thread = self._thread
        if self._loop is not None and self._stop is not None and thread is not None and thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
            thread.join(timeout=10)
