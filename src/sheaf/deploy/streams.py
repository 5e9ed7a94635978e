"""The result streams a server is receiving: one per client, each with a deadline, none orphaned.

A result is a stream of messages (a header, then its tensors' chunks), and a client decides
how fast — or whether — the next message comes. Left alone, a client could open many
streams, or one that never ends, and pin the server's memory and handlers with them. So,
once a stream's signature verified:

- **one stream per client**: a second result stream from a client whose first is still
  being received is refused (:class:`StreamBusy`); an honest client sends one result at a
  time and, after a lost connection, delivers it again under the same update id;
- **a receive deadline**: each message must arrive within ``timeout`` seconds of the one
  before (a stream that stalls is given up with a :class:`~sheaf.deploy.chunks.WireError`
  the client hears), and the stream as a whole lives at most as long as its task's slot;
- **no orphans**: when the slot the stream answers is settled otherwise (the client fell
  silent, the round timed out) or the round is over, :meth:`ResultStreams.abandon`
  cancels the stream; whatever it received is dropped.

Bytes are only allocated as they arrive (:class:`~sheaf.deploy.chunks.TensorAssembler`),
so together these bound a server's memory for results by what its clients actually sent
for work it awaits.

All of it runs on the server's event loop; nothing here is shared with another thread.

Example:
    >>> import asyncio
    >>> from sheaf.deploy.wire import ResultReader, encode_result
    >>> async def one_result():
    ...     streams = ResultStreams(timeout=1.0)
    ...     messages = encode_result("r1-fit-c0", "u1", "fit", 1, failure="out of memory")
    ...     reader = ResultReader(limit=1 << 10)
    ...     reader.feed(messages[0])
    ...     async def rest():
    ...         for message in messages[1:]:
    ...             yield message
    ...     with streams.claim(0) as claim:
    ...         return (await streams.read(claim, "r1-fit-c0", reader, rest())).failure
    >>> asyncio.run(one_result())
    'out of memory'
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from sheaf.core.errors import SheafError
from sheaf.deploy.chunks import WireError
from sheaf.deploy.wire import ReceivedResult, ResultReader

__all__ = ["ResultStreams", "StreamBusy", "StreamClaim"]


class StreamBusy(SheafError):
    """A client sent a second result stream while its first is still being received."""


@dataclass
class StreamClaim:
    """A client's one open result stream.

    Attributes:
        client_id: the client.
        task_id: the task it answers, once its header is known ("" before).
        reading: the task receiving its messages, while it does.
    """

    client_id: int
    task_id: str = ""
    reading: asyncio.Task[ReceivedResult] | None = None


class ResultStreams:
    """The result streams being received (see the module docstring).

    Args:
        timeout: the most seconds between two messages of a stream.
    """

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._open: dict[int, StreamClaim] = {}

    @property
    def open(self) -> int:
        """How many result streams are being received."""
        return len(self._open)

    @contextmanager
    def claim(self, client_id: int) -> Iterator[StreamClaim]:
        """Hold the client's one result stream for the ``with`` block.

        Raises:
            StreamBusy: if the client has one open already.
        """
        if client_id in self._open:
            raise StreamBusy(f"client {client_id} is already sending a result; one result stream at a time")
        claim = StreamClaim(client_id)
        self._open[client_id] = claim
        try:
            yield claim
        finally:
            del self._open[client_id]
            if claim.reading is not None:
                claim.reading.cancel()

    async def first(self, stream: AsyncIterator[bytes]) -> bytes | None:
        """The first message of a stream (None if it ended at once).

        Raises:
            WireError: if nothing arrives within the timeout.
        """
        try:
            return await asyncio.wait_for(anext(stream, None), self.timeout)
        except TimeoutError:
            raise WireError(f"result: no message within {self.timeout:g} s; the stream is given up") from None

    async def read(
        self, claim: StreamClaim, task_id: str, reader: ResultReader, stream: AsyncIterator[bytes]
    ) -> ReceivedResult | None:
        """Receive the rest of a result whose header ``reader`` has taken.

        Returns:
            The result, or None if the stream was abandoned (:meth:`abandon`) meanwhile.

        Raises:
            WireError: if a message is malformed or late, or the result is incomplete.
        """
        claim.task_id = task_id
        reading = asyncio.ensure_future(self._rest(reader, stream))
        claim.reading = reading
        try:
            return await reading
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if reading.cancelled() and current is not None and not current.cancelling():
                return None  # abandoned: the slot was settled otherwise, or the round is over
            raise
        finally:
            claim.reading = None
            reading.cancel()

    async def _rest(self, reader: ResultReader, stream: AsyncIterator[bytes]) -> ReceivedResult:
        while True:
            try:
                message = await asyncio.wait_for(anext(stream, None), self.timeout)
            except TimeoutError:
                raise WireError(f"result: no message for {self.timeout:g} s; the stream is given up") from None
            if message is None:
                return reader.finish()
            reader.feed(message)

    def abandon(self, awaited: Callable[[int, str], bool]) -> int:
        """Cancel every stream whose task is no longer awaited; returns how many.

        Args:
            awaited: whether a result for ``(client id, task id)`` may still settle its slot.
        """
        cancelled = 0
        for claim in list(self._open.values()):
            if claim.reading is not None and not claim.reading.done() and not awaited(claim.client_id, claim.task_id):
                claim.reading.cancel()
                cancelled += 1
        return cancelled
