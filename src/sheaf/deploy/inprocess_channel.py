"""The client's half of the in-process transport: calls, limits, and how a call ends.

An :class:`InProcessChannel` (made by
:meth:`~sheaf.deploy.inprocess.InProcessTransport.connect`) carries each call as gRPC
would, minus the sockets: the request's bytes and metadata go to the service's handler,
which runs in a task of its own with a :class:`~sheaf.deploy.rpc.CallContext`; replies
come back message by message (one in flight at a time, like a stream under flow
control); every message is held to the client's and the server's size limits, with
gRPC's status and wording (``CLIENT: Sent message larger than max (N vs. M)``).

How a call ends is decided in one place, :meth:`InProcessChannel._outcome`: a handler's
``abort`` becomes an :class:`~sheaf.deploy.rpc.RpcError` with its code and details; an
exception a handler did not mean becomes ``UNKNOWN`` (``Unexpected <class ...>: ...``, as
gRPC words it); a call broken off — a dropped connection, the server stopping, the
channel closing, the deadline — carries the status of what broke it; a failure a test
injected after delivery replaces the reply.

Example:
    >>> _limit_problem("CLIENT: Sent", 20, 16)
    'CLIENT: Sent message larger than max (20 vs. 16)'
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterable, AsyncIterator, Awaitable
from dataclasses import dataclass, field
from typing import Any, NoReturn, Protocol

from sheaf.deploy.logs import log_event
from sheaf.deploy.rpc import Handlers, Metadata, Requests, RpcError, StatusCode

__all__ = ["InProcessChannel"]

_log = logging.getLogger("sheaf.server")


@dataclass(frozen=True)
class Fault:
    """A failure a test asked the transport to inject into the next matching call."""

    code: StatusCode
    details: str
    method: str
    delivered: bool

    def matches(self, method: str) -> bool:
        return self.method in ("", method, method.rsplit("/", 1)[-1])


class Link(Protocol):
    """What a channel needs of the transport it belongs to (``InProcessTransport`` is one)."""

    latency: float
    max_message_bytes: int

    def _arrive(self, method: str, metadata: Metadata) -> tuple[Handlers, Fault | None]: ...

    def _begin(self, call: _Call) -> None: ...

    def _end(self, call: _Call) -> None: ...

    def _close(self, channel: InProcessChannel) -> None: ...


class _Abort(Exception):
    """Ends the server side of a call with a status (as gRPC's abort does, by raising)."""

    def __init__(self, code: StatusCode, details: str) -> None:
        super().__init__(details)
        self.code = code
        self.details = details


class _Context:
    """The :class:`~sheaf.deploy.rpc.CallContext` of one in-process call."""

    def __init__(self, metadata: Metadata, peer: str) -> None:
        self._metadata = tuple(metadata)
        self._peer = peer

    def metadata(self) -> Metadata:
        return self._metadata

    def peer(self) -> str:
        return self._peer

    async def abort(self, code: StatusCode, details: str) -> NoReturn:
        raise _Abort(code, details)


@dataclass(eq=False)
class _Call:
    """A call in progress: the task running its server side, and what broke it off, if anything."""

    task: asyncio.Future[Any]
    channel: InProcessChannel
    method: str
    metadata: Metadata
    broken: RpcError | None = field(default=None)

    def break_off(self, error: RpcError) -> None:
        """End the call with ``error`` (its server side is cancelled), unless it is over."""
        if not self.task.done():
            self.broken = error
            self.task.cancel()


def _limit_problem(what: str, size: int, limit: int) -> str | None:
    return f"{what} message larger than max ({size} vs. {limit})" if size > limit else None


class InProcessChannel:
    """A connection to an in-process server: a :class:`~sheaf.deploy.rpc.Channel`.

    Args:
        transport: the transport it belongs to (its loop runs every call).
        peer: its name in the server's logs.
        max_send_bytes: the largest message it sends.
        max_receive_bytes: the largest message it receives.
    """

    def __init__(self, transport: Link, peer: str, max_send_bytes: int, max_receive_bytes: int) -> None:
        self.peer = peer
        self.max_send_bytes = max_send_bytes
        self.max_receive_bytes = max_receive_bytes
        self._transport = transport
        self._closed = False

    # The three call shapes -----------------------------------------------------------------
    async def unary_unary(
        self, method: str, request: bytes, *, metadata: Metadata, timeout: float | None = None
    ) -> bytes:
        """One request, one reply (raises :class:`~sheaf.deploy.rpc.RpcError`)."""
        deadline, handlers, fault = await self._arrive(method, metadata, timeout, request)
        handler = handlers.unary_unary.get(method)
        if handler is None:
            raise RpcError(StatusCode.UNIMPLEMENTED, "Method not found!", method=method)
        call = self._start(handler(request, _Context(metadata, self.peer)), method, metadata)
        try:
            await self._settled(call, deadline)
        finally:
            self._transport._end(call)
        reply: bytes = self._outcome(call, method, fault)
        problem = self._reply_problem(reply)
        if problem is not None:
            raise RpcError(StatusCode.RESOURCE_EXHAUSTED, problem, method=method)
        return reply

    async def unary_stream(
        self, method: str, request: bytes, *, metadata: Metadata, timeout: float | None = None
    ) -> AsyncIterator[bytes]:
        """One request, a stream of replies (raises :class:`~sheaf.deploy.rpc.RpcError`)."""
        deadline, handlers, fault = await self._arrive(method, metadata, timeout, request)
        handler = handlers.unary_stream.get(method)
        if handler is None:
            raise RpcError(StatusCode.UNIMPLEMENTED, "Method not found!", method=method)
        replies: asyncio.Queue[bytes] = asyncio.Queue(maxsize=1)

        async def serve() -> None:
            async for message in handler(request, _Context(metadata, self.peer)):
                problem = self._reply_problem(message)
                if problem is not None:
                    raise _Abort(StatusCode.RESOURCE_EXHAUSTED, problem)
                if fault is None:  # with a fault after delivery, the replies are lost
                    await replies.put(message)

        call = self._start(serve(), method, metadata)
        try:
            while (message := await self._next(call, replies, deadline)) is not None:
                yield message
        finally:
            self._transport._end(call)
        self._outcome(call, method, fault)

    async def stream_unary(
        self, method: str, requests: Requests, *, metadata: Metadata, timeout: float | None = None
    ) -> bytes:
        """A stream of requests, one reply (raises :class:`~sheaf.deploy.rpc.RpcError`)."""
        deadline, handlers, fault = await self._arrive(method, metadata, timeout)
        handler = handlers.stream_unary.get(method)
        if handler is None:
            raise RpcError(StatusCode.UNIMPLEMENTED, "Method not found!", method=method)

        async def sent() -> AsyncIterator[bytes]:
            if isinstance(requests, AsyncIterable):
                async for message in requests:
                    yield message
            else:
                for message in requests:
                    yield message

        async def stream() -> AsyncIterator[bytes]:
            async for message in sent():
                problem = self._request_problem(message)
                if problem is not None:
                    raise _Abort(StatusCode.RESOURCE_EXHAUSTED, problem)
                await asyncio.sleep(0)  # other calls go on between messages, as on a link
                yield message

        call = self._start(handler(stream(), _Context(metadata, self.peer)), method, metadata)
        try:
            await self._settled(call, deadline)
        finally:
            self._transport._end(call)
        reply: bytes = self._outcome(call, method, fault)
        return reply

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    async def close(self) -> None:
        """Close the connection; its calls in progress end ``CANCELLED``."""
        self._closed = True
        self._transport._close(self)

    # Steps ---------------------------------------------------------------------------------------
    async def _arrive(
        self, method: str, metadata: Metadata, timeout: float | None, request: bytes | None = None
    ) -> tuple[float | None, Handlers, Fault | None]:
        """Send a call: check it leaves, wait the link's latency, reach the server (see the transport)."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        if self._closed:
            raise RpcError(StatusCode.CANCELLED, "the channel is closed", method=method)
        size = 0 if request is None else len(request)
        problem = _limit_problem("CLIENT: Sent", size, self.max_send_bytes)
        if problem is not None:
            raise RpcError(StatusCode.RESOURCE_EXHAUSTED, problem, method=method)
        if self._transport.latency > 0:
            await asyncio.sleep(self._transport.latency)
            if deadline is not None and loop.time() >= deadline:  # it expired on the way
                raise RpcError(StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded", method=method)
        handlers, fault = self._transport._arrive(method, metadata)
        problem = _limit_problem("SERVER: Received", size, self._transport.max_message_bytes)
        if problem is not None:
            raise RpcError(StatusCode.RESOURCE_EXHAUSTED, problem, method=method)
        return deadline, handlers, fault

    def _request_problem(self, message: bytes) -> str | None:
        return _limit_problem("CLIENT: Sent", len(message), self.max_send_bytes) or _limit_problem(
            "SERVER: Received", len(message), self._transport.max_message_bytes
        )

    def _reply_problem(self, message: bytes) -> str | None:
        return _limit_problem("SERVER: Sent", len(message), self._transport.max_message_bytes) or _limit_problem(
            "CLIENT: Received", len(message), self.max_receive_bytes
        )

    def _start(self, server_side: Awaitable[Any], method: str, metadata: Metadata) -> _Call:
        call = _Call(asyncio.ensure_future(server_side), self, method, tuple(metadata))
        self._transport._begin(call)
        return call

    @staticmethod
    def _remaining(deadline: float | None) -> float | None:
        return None if deadline is None else max(deadline - asyncio.get_running_loop().time(), 0.0)

    async def _settled(self, call: _Call, deadline: float | None) -> None:
        """Wait for the server side to finish; break the call off at the deadline."""
        await asyncio.wait({call.task}, timeout=self._remaining(deadline))
        if not call.task.done():
            call.break_off(RpcError(StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded"))

    async def _next(self, call: _Call, replies: asyncio.Queue[bytes], deadline: float | None) -> bytes | None:
        """The next reply of a stream, or None once the server side is over."""
        if not replies.empty():
            return replies.get_nowait()
        if call.task.done() or call.broken is not None:
            return None
        getter = asyncio.ensure_future(replies.get())
        try:
            await asyncio.wait(
                {getter, call.task}, timeout=self._remaining(deadline), return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            if not getter.done():
                getter.cancel()
        if getter.done() and not getter.cancelled():
            return getter.result()
        if not call.task.done():
            call.break_off(RpcError(StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded"))
        return None

    def _outcome(self, call: _Call, method: str, fault: Fault | None) -> Any:
        """The one place an in-process call's end becomes what its client sees."""
        if call.broken is not None:
            raise RpcError(call.broken.code, call.broken.details, method=method)
        task = call.task
        if task.cancelled():
            raise RpcError(StatusCode.CANCELLED, "Cancelled", method=method)
        error = task.exception()
        if fault is not None:  # the server took the call; its answer was lost on the way
            raise RpcError(fault.code, fault.details, method=method)
        if error is None:
            return task.result()
        if isinstance(error, _Abort):
            raise RpcError(error.code, error.details, method=method)
        log_event(_log, logging.ERROR, "handler_failed", method=method, error=f"{type(error).__name__}: {error}")
        raise RpcError(StatusCode.UNKNOWN, f"Unexpected {type(error)}: {error}", method=method)
