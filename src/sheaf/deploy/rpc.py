"""The transport seam of a deployment: four call shapes, one error, a protocol for each side.

A deployment's logic — signing, checking, chunking, settling work — never touches a
socket. The client (:class:`~sheaf.deploy.client.DeployedClient`) calls a
:class:`Channel`; the server's handlers (:class:`~sheaf.deploy.service.FederationService`)
see only a :class:`CallContext`: the request's metadata, the peer's name and ``abort``.
A :class:`ServerTransport` serves a :class:`Service`'s :class:`Handlers`. Two transports
implement all three:

- gRPC, over the network (:mod:`sheaf.deploy.transport`), the default;
- in-process, on one event loop with no sockets (:mod:`sheaf.deploy.inprocess`), for tests
  of a deployment at unit speed.

Both carry the same bytes: requests are serialised protobuf, signed and verified, results
and tasks stream in the same chunks. Status codes are gRPC's, named by
:class:`StatusCode` so that nothing above the transports imports gRPC. A failed call,
whichever transport carried it, surfaces as one :class:`RpcError`; each transport
translates its own failures into it in one place::

    SheafError
    └── RpcError     a call failed: its status code and the server's one-line details

Example:
    >>> error = RpcError(StatusCode.UNAUTHENTICATED, "replayed request", method="/sheaf.v1.Federation/Join")
    >>> str(error), error.code.name
    ('Join failed: UNAUTHENTICATED: replayed request', 'UNAUTHENTICATED')
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import NoReturn, Protocol

from sheaf.core.errors import SheafError

__all__ = [
    "CallContext",
    "Channel",
    "Connector",
    "Handlers",
    "Listening",
    "Metadata",
    "Requests",
    "RpcError",
    "ServerTransport",
    "Service",
    "StatusCode",
]

#: A request's metadata: (key, value) pairs, as gRPC carries them.
Metadata = Sequence[tuple[str, str | bytes]]

#: The messages of a client stream: a list, or an async iterable that yields them as they
#: are ready (a slow client's stream, or a hostile one that never ends).
Requests = Iterable[bytes] | AsyncIterable[bytes]


class StatusCode(enum.Enum):
    """The status of a finished call: gRPC's codes, by the same names and numbers."""

    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16


class RpcError(SheafError):
    """A call failed: refused by the server, or the connection did not carry it.

    Args:
        code: the call's status.
        details: the one line the server (or the transport) gave.
        method: the method's path, for the message.
    """

    def __init__(self, code: StatusCode, details: str, *, method: str = "") -> None:
        name = method.rsplit("/", 1)[-1] or "call"
        super().__init__(f"{name} failed: {code.name}: {details}")
        self.code = code
        self.details = details
        self.method = method


class Channel(Protocol):
    """The client's side of a connection: the three call shapes sheaf uses, on raw bytes.

    Every method raises :class:`RpcError` when the call fails, whatever the transport.
    """

    async def unary_unary(
        self, method: str, request: bytes, *, metadata: Metadata, timeout: float | None = None
    ) -> bytes:
        """One request, one reply."""
        ...

    def unary_stream(
        self, method: str, request: bytes, *, metadata: Metadata, timeout: float | None = None
    ) -> AsyncIterator[bytes]:
        """One request, a stream of replies."""
        ...

    async def stream_unary(
        self, method: str, requests: Requests, *, metadata: Metadata, timeout: float | None = None
    ) -> bytes:
        """A stream of requests (sent as the iterable yields them), one reply."""
        ...

    async def close(self) -> None:
        """Close the connection; calls still in progress are cancelled."""
        ...


#: Opens a new connection to the server (a client calls it again after each failure).
Connector = Callable[[], Channel]


class CallContext(Protocol):
    """What a server handler needs to know about the call it is answering."""

    def metadata(self) -> Metadata:
        """The request's metadata (for sheaf, its signature)."""
        ...

    def peer(self) -> str:
        """Who is calling, as the transport names it (for logs)."""
        ...

    async def abort(self, code: StatusCode, details: str) -> NoReturn:
        """End the call with ``code`` and one line saying why; never returns."""
        ...


UnaryHandler = Callable[[bytes, CallContext], Awaitable[bytes]]
ReplyStreamHandler = Callable[[bytes, CallContext], AsyncIterator[bytes]]
RequestStreamHandler = Callable[[AsyncIterator[bytes], CallContext], Awaitable[bytes]]


@dataclass(frozen=True)
class Handlers:
    """A service's methods by path (``/sheaf.v1.Federation/Join``), one mapping per call shape.

    Attributes:
        unary_unary: one request, one reply.
        unary_stream: one request, a stream of replies.
        stream_unary: a stream of requests, one reply.
    """

    unary_unary: Mapping[str, UnaryHandler]
    unary_stream: Mapping[str, ReplyStreamHandler]
    stream_unary: Mapping[str, RequestStreamHandler]


class Service(Protocol):
    """What a server transport serves."""

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Attach to the event loop the handlers will run on."""
        ...

    def handlers(self) -> Handlers:
        """The methods to serve."""
        ...


@dataclass(frozen=True)
class Listening:
    """Where a started server transport can be reached.

    Attributes:
        address: what clients dial (``host:port``), or the transport's name.
        port: the port it listens on; 0 where there is no socket.
        tls: whether the connection is encrypted and the server authenticated.
    """

    address: str
    port: int
    tls: bool


class ServerTransport(Protocol):
    """Carries calls from clients to a :class:`Service` (``run_server`` drives it)."""

    def start(self, service: Service) -> Listening:
        """Start serving ``service``; returns once clients can reach it."""
        ...

    def linger(self, seconds: float) -> None:
        """After the run, give connected clients up to ``seconds`` to hear that it is over."""
        ...

    def stop(self) -> None:
        """Stop serving: calls in progress fail, new calls cannot reach the service."""
        ...
