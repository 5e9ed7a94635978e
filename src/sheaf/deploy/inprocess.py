"""The in-process transport: a deployment's server and clients on one event loop, no sockets.

:class:`InProcessTransport` is both sides of :mod:`sheaf.deploy.rpc` in one object, in the
spirit of httpx's ``MockTransport``: ``run_server`` serves through it
(``run_server(config, options, transport=transport)``) and clients connect with
``DeployedClient(options, connect=transport.connect)``. Nothing is mocked above the
transport: requests are serialised protobuf, signed by the client and verified by the
server; tasks and results travel in the same chunks; the message-size limits of a real
channel apply, with gRPC's status codes and messages. A call only skips the network.

Every call runs the server's handler in a task of its own on the transport's event loop,
which runs on a thread of its own; the clients' coroutines run there too
(:meth:`InProcessTransport.submit`). A handler's ``abort`` — or a broken limit, a dropped
connection, a deadline — reaches the client as the :class:`~sheaf.deploy.rpc.RpcError`
gRPC's ``AioRpcError`` would have become, with the same code and details; all of that is
decided in one place (:mod:`sheaf.deploy.inprocess_channel`, the client's half).

Tests (yours too: your task against the real coordinator) can disturb the link:
:meth:`~InProcessTransport.fail_next` fails the next call with a status (before or after the
server handled it), :meth:`~InProcessTransport.drop` breaks every call in progress as a lost
connection would, :attr:`~InProcessTransport.latency` delays every call, and
:meth:`~InProcessTransport.observe` sees every call arrive.

Example:
    >>> from sheaf.deploy.rpc import Handlers, StatusCode
    >>> class Shout:
    ...     def bind(self, loop): pass
    ...     def handlers(self):
    ...         async def shout(request, context):
    ...             if not request:
    ...                 await context.abort(StatusCode.INVALID_ARGUMENT, "nothing to shout")
    ...             return request.upper()
    ...         return Handlers({"/demo.Shout/Say": shout}, {}, {})
    >>> async def say(channel, text):
    ...     try:
    ...         return await channel.unary_unary("/demo.Shout/Say", text, metadata=())
    ...     except RpcError as exc:
    ...         return exc.code.name, exc.details
    >>> with InProcessTransport() as transport:
    ...     _ = transport.start(Shout())
    ...     channel = transport.connect()
    ...     transport.fail_next(StatusCode.UNAVAILABLE, "link down")
    ...     [transport.run(say(channel, text)) for text in (b"hi", b"hi", b"")]
    [('UNAVAILABLE', 'link down'), b'HI', ('INVALID_ARGUMENT', 'nothing to shout')]
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import threading
from collections.abc import Callable, Coroutine
from types import TracebackType
from typing import Any, TypeVar

from sheaf.core.errors import SheafError
from sheaf.deploy.chunks import MAX_MESSAGE_BYTES
from sheaf.deploy.inprocess_channel import Fault, InProcessChannel, _Call
from sheaf.deploy.rpc import Handlers, Listening, Metadata, RpcError, Service, StatusCode

__all__ = ["InProcessTransport"]

T = TypeVar("T")


class InProcessTransport:
    """A server transport and its clients' connections in one process (see the module).

    Use it as a context manager, or call :meth:`close` when done.

    Args:
        max_message_bytes: the largest message the server receives or sends (gRPC's
            limit in a real server, :data:`~sheaf.deploy.chunks.MAX_MESSAGE_BYTES`).
        latency: seconds every call waits before it reaches the server.

    Attributes:
        latency: seconds every call waits before it reaches the server (change it any time).
    """

    def __init__(self, *, max_message_bytes: int = MAX_MESSAGE_BYTES, latency: float = 0.0) -> None:
        self.max_message_bytes = max_message_bytes
        self.latency = latency
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="sheaf-inprocess", daemon=True)
        self._thread.start()
        self._handlers: Handlers | None = None
        self._serving = threading.Event()
        self._changed = threading.Condition()  # guards the fields below
        self._channels: set[InProcessChannel] = set()
        self._calls: set[_Call] = set()
        self._faults: list[Fault] = []
        self._observers: list[Callable[[str, Metadata], None]] = []
        self._peers = itertools.count(1)

    # Running code on the transport's loop -----------------------------------------------
    def submit(self, coroutine: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Run a coroutine (a client's ``run()``, a test's calls) on the transport's loop."""
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop)

    def run(self, coroutine: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run a coroutine on the transport's loop and wait for its result."""
        return self.submit(coroutine).result(timeout)

    def _on_loop(self, action: Callable[[], T]) -> T:
        if threading.current_thread() is self._thread:
            return action()

        async def act() -> T:
            return action()

        return self.run(act())

    # Server side -------------------------------------------------------------------------
    def start(self, service: Service) -> Listening:
        """Serve ``service`` (bound to the transport's loop) until :meth:`stop`."""

        def attach() -> None:
            service.bind(self._loop)
            self._handlers = service.handlers()
            self._serving.set()

        self._on_loop(attach)
        return Listening("in-process", 0, False)

    def wait_until_serving(self, timeout: float | None = None) -> bool:
        """Block until a service is started; returns whether one is."""
        return self._serving.wait(timeout)

    def linger(self, seconds: float) -> None:
        """Wait until every connection is closed (its client heard the run is over), at most ``seconds``."""
        with self._changed:
            self._changed.wait_for(lambda: not self._channels, timeout=seconds)

    def stop(self) -> None:
        """Stop serving: calls in progress fail with ``UNAVAILABLE``, as do new ones."""
        if self._loop.is_closed():
            return

        def detach() -> None:
            self._handlers = None
            self._serving.clear()
            self._break(lambda call: True, RpcError(StatusCode.UNAVAILABLE, "the server stopped"))

        self._on_loop(detach)

    # Client side -------------------------------------------------------------------------
    def connect(
        self, *, max_send_bytes: int = MAX_MESSAGE_BYTES, max_receive_bytes: int = MAX_MESSAGE_BYTES
    ) -> InProcessChannel:
        """A new connection to the served service (a :data:`~sheaf.deploy.rpc.Connector`).

        Args:
            max_send_bytes: the largest message this client sends (gRPC's client limit).
            max_receive_bytes: the largest message this client receives.
        """
        channel = InProcessChannel(self, f"in-process:{next(self._peers)}", max_send_bytes, max_receive_bytes)
        with self._changed:
            self._channels.add(channel)
        return channel

    # Test hooks ---------------------------------------------------------------------------
    def fail_next(
        self, code: StatusCode, details: str = "failed by the test", *, method: str = "", delivered: bool = False
    ) -> None:
        """Fail the next call (of ``method``, e.g. ``"PushResult"``, if given) with ``code``.

        Args:
            code: the status the client sees.
            details: the line it sees with it.
            method: only a call of this method (name or path); empty: any call.
            delivered: let the server handle the call in full first, and lose its reply —
                as when a connection breaks just after the server took the request.
        """
        with self._changed:
            self._faults.append(Fault(code, details, method, delivered))

    def drop(self, matching: Callable[[str, Metadata], bool] | None = None) -> int:
        """Break calls in progress with ``UNAVAILABLE``, as a lost connection would.

        Args:
            matching: which calls, by method path and metadata (e.g. a client's
                ``sheaf-key``); None: every call.

        Returns:
            How many calls were broken off.
        """
        error = RpcError(StatusCode.UNAVAILABLE, "connection dropped")
        which = (lambda call: True) if matching is None else (lambda call: matching(call.method, call.metadata))
        return self._on_loop(lambda: self._break(which, error))

    def observe(self, observer: Callable[[str, Metadata], None]) -> None:
        """Call ``observer(method, metadata)`` on the transport's loop as each call arrives."""
        with self._changed:
            self._observers.append(observer)

    # Closing -------------------------------------------------------------------------------
    def close(self) -> None:
        """Stop serving, cancel every coroutine still running on the loop, end its thread."""
        if self._loop.is_closed():
            return
        self.stop()

        async def cancel_all() -> None:
            current = asyncio.current_task()
            tasks = [task for task in asyncio.all_tasks() if task is not current]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        self.run(cancel_all(), timeout=30)
        self.run(self._loop.shutdown_asyncgens(), timeout=30)
        self.run(self._loop.shutdown_default_executor(), timeout=30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=30)
        self._loop.close()

    def __enter__(self) -> InProcessTransport:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()

    # For the channels (on the loop) ------------------------------------------------------
    def _check_loop(self) -> None:
        if asyncio.get_running_loop() is not self._loop:
            raise SheafError(
                "an in-process channel works on its transport's event loop only: "
                "run the client with transport.submit(...) or transport.run(...)"
            )

    def _arrive(self, method: str, metadata: Metadata) -> tuple[Handlers, Fault | None]:
        """What a call finds on arrival: the service's handlers and the fault it takes, if any."""
        self._check_loop()
        with self._changed:
            observers = list(self._observers)
            fault = next((f for f in self._faults if f.matches(method)), None)
            if fault is not None:
                self._faults.remove(fault)
        for observer in observers:
            observer(method, metadata)
        if fault is not None and not fault.delivered:
            raise RpcError(fault.code, fault.details, method=method)
        if self._handlers is None:
            raise RpcError(StatusCode.UNAVAILABLE, "no server is serving in this process", method=method)
        return self._handlers, fault

    def _begin(self, call: _Call) -> None:
        with self._changed:
            self._calls.add(call)

    def _end(self, call: _Call) -> None:
        if not call.task.done():
            call.task.cancel()  # the client went away: so does the server side
        elif not call.task.cancelled():
            call.task.exception()  # seen, even if the client stopped listening before it came
        with self._changed:
            self._calls.discard(call)

    def _close(self, channel: InProcessChannel) -> None:
        self._check_loop()
        self._break(lambda call: call.channel is channel, RpcError(StatusCode.CANCELLED, "the channel was closed"))
        with self._changed:
            self._channels.discard(channel)
            self._changed.notify_all()

    def _break(self, which: Callable[[_Call], bool], error: RpcError) -> int:
        with self._changed:
            calls = [call for call in self._calls if which(call) and not call.task.done()]
        for call in calls:
            call.break_off(error)
        return len(calls)
