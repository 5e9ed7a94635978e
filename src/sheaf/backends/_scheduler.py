"""One scheduler for worker pools: which worker runs which clients, and what a lost worker costs.

The pool and Ray backends keep a few long-lived workers, each running many clients. Both
hand a cohort to :func:`schedule`, which owns the whole policy; they only move bytes,
through a small :class:`Transport` (pipes, shared memory and processes for the pool; actors
and the object store for Ray; a fake of a few dozen lines in the tests). Replies are
decoded and validated by a :class:`Collector` (:mod:`sheaf.backends._collect`).

Work:

- Clients go out in chunks of ``ceil(waiting / (2 · workers))``, 1 to 64, so chunks shrink
  as the queue empties and a worker that finishes early takes more.
- A worker gets its next chunk as soon as it may be running the last client of its
  current one — at once where a chunk's replies come together (Ray), when one client is
  left where each client's reply comes as it finishes (pool) — so it never waits for the
  parent, and it holds at most two chunks.
- When the strategy needs only the sum of the updates, workers add their clients' updates
  into exact partial sums; a worker with nothing to run, when no client is waiting, is
  asked to flush its sum. A sum is accepted only if its weight and count are those of the
  clients the worker said it added.

Failure semantics (a *lost* worker died, sent a malformed reply, or ran one client longer
than ``timeout``; it is killed and a new worker replaces it):

- A client whose code raises is a failure its worker reports, like any other reply.
- The client a lost worker was running fails, with the reason — if exactly one client may
  have been running. Where replies come per chunk, every unanswered client of the chunk
  may have been: each of them runs again alone, so the next loss names the client that
  causes it (training is deterministic, so it does it again), and the rest succeed. There
  a reply can also be lost with its worker after its call finished (Ray), so every
  unanswered client the worker held counts as possibly running, and a client runs alone
  only on a worker with nothing else to do.
- Clients the lost worker had not started run again elsewhere.
- Clients whose updates sat in its unsent partial sum are forgotten and run again, so an
  update is counted exactly once. A worker lost while running no client (sending its sum,
  or idle) cannot be blamed on one: a client whose update is lost that way three times
  fails, so that a worker that dies whenever it sends its sum cannot loop the round forever.
- The time limit counts from when a client starts (per chunk: ``timeout`` times the
  chunk's clients, from when the chunk starts); flushes have none. The clock is read at
  least every :data:`POLL` seconds while a limit runs.
- With no worker left and none starting, :class:`~sheaf.core.errors.BackendError`.

Example:
    >>> class OneWorker:  # answers every chunk at once; see tests/backends/test_scheduler.py
    ...     replies_per_client = True
    ...     def __init__(self): self.inbox = []
    ...     def live(self): return [0]
    ...     def send(self, worker, message): self.inbox.append(message)
    ...     def wait(self, timeout):
    ...         events = [Replied(0, bytes([c])) for m in self.inbox for c in m]
    ...         self.inbox.clear()
    ...         return events
    ...     def kill(self, worker): ...
    ...     def start(self): ...
    >>> class Collect:
    ...     def __init__(self): self.done = []
    ...     def add_reply(self, message, client):
    ...         self.done.append(message[0])
    ...         return False
    ...     def add_sum(self, message, clients): ...
    ...     def forget(self, clients): ...
    >>> collect = Collect()
    >>> schedule(OneWorker(), [3, 1, 2], collect, Work(bytes)), sorted(collect.done)
    ({}, [1, 2, 3])
"""

from __future__ import annotations

import enum
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from sheaf.core.errors import BackendError

__all__ = [
    "MAX_CHUNK",
    "MAX_LOSSES",
    "Collector",
    "Died",
    "Event",
    "Replied",
    "Transport",
    "Work",
    "chunk_size",
    "schedule",
]

logger = logging.getLogger("sheaf.backends")

MAX_CHUNK = 64  # clients in one chunk, at most
MAX_LOSSES = 3  # times a client's update may be lost with a worker running no client before it fails


#: While a time limit runs, the scheduler reads its clock at least this often (seconds): a
#: clock that is not the wall's (a test's, that jumps) is seen within that, not at the
#: deadline the wall clock would reach.
POLL = 1.0


def chunk_size(waiting: int, workers: int) -> int:
    """How many of the ``waiting`` clients the next chunk takes, with ``workers`` live workers.

    Which worker runs which clients, in chunks of which sizes, must never change a result:
    ``tests/backends/test_adversarial_schedules.py`` replaces this with random sizes on the
    real pool. The scheduler keeps any answer within 1 to ``min(MAX_CHUNK, waiting)``.
    """
    return math.ceil(waiting / (2 * workers))


@dataclass(frozen=True)
class Replied:
    """A worker's next reply (replies come in the order of the work sent to it)."""

    worker: int
    message: bytes


@dataclass(frozen=True)
class Died:
    """A worker is gone (the transport has forgotten it); ``why`` says how, for its client."""

    worker: int
    why: str


Event = Replied | Died


class Transport(Protocol):
    """How the scheduler reaches its workers; the transport only moves bytes."""

    #: True if each client's reply arrives as soon as the client is done and none is lost
    #: when its worker dies afterwards (a pipe): the first unanswered client is then the
    #: one running. False if a chunk's replies arrive together when it is done (a Ray call).
    replies_per_client: bool

    def live(self) -> Sequence[int]:
        """The workers ready for work (ids never reused)."""
        ...

    def send(self, worker: int, message: bytes) -> None:
        """Queue ``message`` for ``worker``; never blocks on the worker (a dead one shows in ``wait``)."""
        ...

    def wait(self, timeout: float | None) -> list[Event]:
        """What happened within ``timeout`` seconds (None: until something does).

        Returns [] when only time passed or a new worker became ready.

        Raises:
            BackendError: if no worker is running or starting.
        """
        ...

    def kill(self, worker: int) -> None:
        """Stop ``worker`` for good; no event of it follows (nothing if it is gone)."""
        ...

    def start(self) -> None:
        """Start a new worker; it shows in :meth:`live` once it is ready."""
        ...


class Collector(Protocol):
    """Decodes and records replies; whatever it refuses, it refuses with BackendError."""

    def add_reply(self, message: bytes, client: int) -> bool:
        """Record ``client``'s reply; returns whether its update went into the worker's sum."""
        ...

    def add_sum(self, message: bytes, clients: Sequence[int]) -> None:
        """Record a worker's partial sum, which must hold exactly the updates of ``clients``."""
        ...

    def forget(self, clients: Sequence[int]) -> None:
        """Drop what was recorded for clients that run again (their sum was lost)."""
        ...


@dataclass(frozen=True)
class Work:
    """What to send: ``message(chunk)`` runs a chunk; ``flush`` asks for a partial sum (None: no sums)."""

    message: Callable[[Sequence[int]], bytes]
    flush: bytes | None = None


class WorkerState(enum.Enum):
    """What a worker is doing, from its first job in flight."""

    IDLE = "idle"  # nothing in flight: it gets a chunk, or a flush when no client waits
    RUNNING = "running"  # a chunk first: one of its clients is running (its reply moves it on)
    FLUSHING = "flushing"  # a flush first: it is sending its partial sum


@dataclass
class _Chunk:
    clients: deque[int]  # not yet answered, in order
    alone: bool = False  # a client that may have lost a worker, run by itself


@dataclass
class _Flush:
    clients: list[int]  # whose updates the sum holds


@dataclass
class _Worker:
    jobs: deque[_Chunk | _Flush] = field(default_factory=deque)  # in flight, in order
    summed: list[int] = field(default_factory=list)  # updates in its partial sum, not yet asked for
    since: float = 0.0  # when its first job started

    @property
    def state(self) -> WorkerState:
        if not self.jobs:
            return WorkerState.IDLE
        return WorkerState.RUNNING if isinstance(self.jobs[0], _Chunk) else WorkerState.FLUSHING


def schedule(
    transport: Transport,
    clients: Sequence[int],
    collector: Collector,
    work: Work,
    *,
    timeout: float | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> dict[int, str]:
    """Run every client on ``transport``'s workers, recording replies in ``collector``.

    Args:
        transport: the workers.
        clients: the clients to run, each once.
        collector: decodes and records replies and partial sums.
        work: the messages to send.
        timeout: seconds one client may run (None: no limit).
        clock: the time, in seconds (a fake one in tests).

    Returns:
        The clients that failed because a worker was lost while running them, and why.

    Raises:
        BackendError: if no worker is left and none can be started.
    """
    return _Schedule(transport, collector, work, timeout, clock).run(clients)


class _Schedule:
    def __init__(
        self,
        transport: Transport,
        collector: Collector,
        work: Work,
        timeout: float | None,
        clock: Callable[[], float],
    ) -> None:
        self.transport, self.collector, self.work, self.timeout, self.clock = transport, collector, work, timeout, clock
        self.waiting: deque[int] = deque()
        self.suspects: deque[int] = deque()  # may have lost a worker: each runs alone
        self.workers: dict[int, _Worker] = {}
        self.failed: dict[int, str] = {}
        self.losses: dict[int, int] = {}

    def run(self, clients: Sequence[int]) -> dict[int, str]:
        self.waiting.extend(clients)
        while True:
            self._hand_out()
            if not self.waiting and not self.suspects and not any(w.jobs for w in self.workers.values()):
                return self.failed
            deadlines = [d for d in map(self._deadline, self.workers.values()) if d is not None]
            wait = min(POLL, max(0.0, min(deadlines) - self.clock())) if deadlines else None
            for event in self.transport.wait(wait):
                if event.worker not in self.workers:
                    continue  # one it never gave work to, or one it already killed
                if isinstance(event, Died):
                    self._lose(event.worker, event.why)
                else:
                    self._receive(event.worker, event.message)
            now = self.clock()
            for index, worker in list(self.workers.items()):
                deadline = self._deadline(worker)
                if deadline is not None and now >= deadline:
                    self._lose(
                        index,
                        f"it ran for more than {self.timeout:g} s (engine.client_timeout), so its worker was killed",
                    )

    # Handing out -----------------------------------------------------------------------
    def _hand_out(self) -> None:
        live = list(self.transport.live())
        for index in live:
            self.workers.setdefault(index, _Worker(since=self.clock()))
        sent = True
        while sent:  # one chunk per worker per pass, so the first chunks spread over all of them
            sent = False
            for index in live:
                worker = self.workers[index]
                if (self.suspects or self.waiting) and self._may_take(worker):
                    if self.suspects and (self.transport.replies_per_client or not worker.jobs):
                        chunk = _Chunk(deque([self.suspects.popleft()]), alone=True)
                    elif not self.waiting:
                        continue  # suspects wait for a worker with nothing else (see _lose)
                    else:
                        size = max(1, min(MAX_CHUNK, len(self.waiting), chunk_size(len(self.waiting), len(live))))
                        chunk = _Chunk(deque(self.waiting.popleft() for _ in range(min(size, len(self.waiting)))))
                    self._send(index, worker, chunk, self.work.message(list(chunk.clients)))
                    sent = True
        if self.work.flush is not None and not self.waiting and not self.suspects:
            for index in live:
                worker = self.workers[index]
                if worker.state is WorkerState.IDLE and worker.summed:
                    self._send(index, worker, _Flush(list(worker.summed)), self.work.flush)

    def _may_take(self, worker: _Worker) -> bool:
        """Whether ``worker`` may be running the last client it holds (and holds < 2 jobs)."""
        if not worker.jobs:
            return True
        first = worker.jobs[0]
        left = len(first.clients) if isinstance(first, _Chunk) else 0
        return len(worker.jobs) < 2 and (not self.transport.replies_per_client or left <= 1)

    def _send(self, index: int, worker: _Worker, job: _Chunk | _Flush, message: bytes) -> None:
        if not worker.jobs:
            worker.since = self.clock()
        worker.jobs.append(job)
        self.transport.send(index, message)

    def _deadline(self, worker: _Worker) -> float | None:
        if self.timeout is None or worker.state is not WorkerState.RUNNING:
            return None
        first = worker.jobs[0]
        running = 1 if self.transport.replies_per_client else len(first.clients)
        return worker.since + self.timeout * running

    # Replies ------------------------------------------------------------------------------
    def _receive(self, index: int, message: bytes) -> None:
        worker = self.workers[index]
        if not worker.jobs:
            self._lose(index, "its worker sent a reply nobody asked for and was replaced")
            return
        job = worker.jobs[0]
        try:
            if isinstance(job, _Flush):
                self.collector.add_sum(message, job.clients)
                summed = False
            else:
                summed = self.collector.add_reply(message, job.clients[0])
        except BackendError as exc:
            self._lose(index, f"its worker sent a malformed reply and was replaced ({exc})")
            return
        if isinstance(job, _Flush):
            flushed = set(job.clients)
            worker.summed = [c for c in worker.summed if c not in flushed]
            worker.jobs.popleft()
        else:
            client = job.clients.popleft()
            if summed:
                worker.summed.append(client)
            if not job.clients:
                worker.jobs.popleft()
        worker.since = self.clock()  # the next job (or client) starts now

    # Losses -------------------------------------------------------------------------------
    def _lose(self, index: int, why: str) -> None:
        """Kill and replace a worker; settle the clients it held (see the module docstring)."""
        worker = self.workers.pop(index)
        blamed = worker.state is WorkerState.RUNNING  # else a lost sum counts against its clients
        self.transport.kill(index)
        not_started: list[int] = []
        if self.transport.replies_per_client:
            for position, job in enumerate(worker.jobs):
                if not isinstance(job, _Chunk):
                    continue  # a flush: its sum is lost below
                clients = list(job.clients)
                if position == 0:  # it was running its first unanswered client
                    self.failed[clients.pop(0)] = why
                (self.suspects if job.alone else not_started).extend(clients)
        else:
            # A call's replies can be lost with its worker even when the call had finished
            # (Ray's reply to a chunk done just before its actor died), so any unanswered client
            # it held may have been running: the one, if it held one in its only job (a
            # suspect goes only to a worker with nothing else), else each again alone.
            held = [client for job in worker.jobs if isinstance(job, _Chunk) for client in job.clients]
            if len(held) == 1 and len(worker.jobs) == 1:
                self.failed[held[0]] = why
            else:
                self.suspects.extend(held)
        self.waiting.extendleft(reversed(not_started))
        self.collector.forget(worker.summed)
        again = []
        for client in worker.summed:
            self.losses[client] = self.losses.get(client, 0) + (0 if blamed else 1)
            if self.losses[client] >= MAX_LOSSES:
                self.failed[client] = f"its update was lost {MAX_LOSSES} times with the worker holding it ({why})"
            else:
                again.append(client)
        self.waiting.extendleft(reversed(again))
        logger.warning("sheaf: worker %d lost (%s); starting a new one", index, why)
        self.transport.start()
