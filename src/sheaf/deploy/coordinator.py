"""The server's live state: who is in contact, what each client must do, what came back.

Two threads share it. The round loop (main thread) *posts* a batch of work — a round's
fit cohort, or an evaluation — and *waits* for it; the service's handlers (the event-loop
thread) hand each client its task when it pulls, and *settle* its share when its result
arrives. All state sits behind one lock; the waits are a condition variable (main
thread) and a wake-up callback the service turns into an asyncio event (handlers).

A client's share of a batch is settled exactly once, by the first of:

- its result (or its report that the work failed);
- a rejection of its result by the server's checks;
- silence: no request from it for ``server.heartbeat_timeout`` seconds (counted from
  this server's start for a client it has not heard from yet; the contact book,
  :mod:`sheaf.deploy.contacts`) — it has dropped out;
- the batch's ``server.round_timeout``.

A second delivery of the same update id is a duplicate and changes nothing.

**Open work** (FedBuff, :mod:`sheaf.deploy.buffered`) has no fixed cohort: a client that
pulls without an open share asks the work's ``issue`` for one (which may say no: every
slot taken, or the client already trained from the current model), each share has its own
round, model and deadline (``slot_timeout`` from when it was handed out), a result is
admitted or refused by the work's ``admit`` before its client hears the answer, and every
settled share is queued for the driver, who takes them with :meth:`Coordinator.take_settled`.

Example:
    >>> from sheaf.core.config import ServerConfig
    >>> coordinator = Coordinator({0: "a", 1: "b"}, ServerConfig(round_timeout=0.2))
    >>> work = Work("fit", 1, {c: Slot(c, f"r1-fit-c{c}", b"header") for c in (0, 1)}, [])
    >>> coordinator.post(work)
    >>> coordinator.touch(0)
    >>> coordinator.task_for(0)[0]
    b'header'
    >>> coordinator.settle(0, "r1-fit-c0", "u1", failure="fit failed: out of memory")
    ('accepted', '')
    >>> outcome = coordinator.wait(work)
    >>> [f.reason for f in outcome.failures]
    ['fit failed: out of memory', 'no result within server.round_timeout=0.2 s']
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sheaf.core.config import ServerConfig
from sheaf.core.errors import ClientFailure
from sheaf.deploy.contacts import Contacts
from sheaf.deploy.logs import log_event
from sheaf.deploy.quorum import wait_for_quorum
from sheaf.deploy.secagg_exchange import SecAggExchange
from sheaf.deploy.wire import ReceivedResult
from sheaf.deploy.work import Slot, Work, WorkOutcome

__all__ = ["Coordinator"]


_log = logging.getLogger("sheaf.server")


class Coordinator:
    """The shared state of a running server. See the module docstring.

    Args:
        clients: every authorised client id and its name.
        settings: the run's ``[server]`` settings (timeouts).
        clock: monotonic seconds (for tests).
        on_tick: called about once a second from :meth:`wait` (the server writes its
            status to the run store there).
    """

    def __init__(
        self,
        clients: Mapping[int, str],
        settings: ServerConfig,
        *,
        clock: Callable[[], float] = time.monotonic,
        on_tick: Callable[[], None] | None = None,
    ) -> None:
        self.names = dict(clients)
        self.settings = settings
        self._clock = clock
        started = clock()
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._contacts = Contacts(heartbeat_timeout=settings.heartbeat_timeout, started=started)
        self._work: Work | None = None
        self._finished = False
        # Recent update ids per client: a late repeat of a delivery is still a duplicate.
        self._delivered: dict[int, deque[str]] = {}
        self._traffic = {"sent": 0, "received": 0}
        self.on_tick = on_tick
        self._last_tick = started
        #: set by the service: wakes handlers waiting for work (called without the lock)
        self.wakeup: Callable[[], None] | None = None
        #: the secure-aggregation messages of the round in progress
        self.secagg = SecAggExchange(self._wake)

    # Contact ---------------------------------------------------------------------------
    def touch(self, client_id: int, peer: str = "") -> None:
        """Record a request from a client (any request counts as a heartbeat)."""
        with self._lock:
            event = self._contacts.heard(client_id, now=self._clock())
        if event is not None:
            log_event(_log, logging.INFO, event, client=client_id, name=self.names.get(client_id, "?"), peer=peer)

    def count_traffic(self, *, sent: int = 0, received: int = 0) -> None:
        """Add message bytes the server sent or received (protobuf bytes, before gRPC framing)."""
        with self._lock:
            self._traffic["sent"] += sent
            self._traffic["received"] += received

    @property
    def traffic(self) -> dict[str, int]:
        """Message bytes sent and received since the server started."""
        with self._lock:
            return dict(self._traffic)

    def now(self) -> float:
        """The coordinator's clock (monotonic seconds)."""
        return self._clock()

    def silence(self, client_id: int) -> float:
        """Seconds since the last request from a client (since the server's start if none)."""
        now = self._clock()
        with self._lock:
            return self._contacts.silent_for(client_id, now=now)

    def tick(self) -> None:
        """Let the status writer run if a second has passed (for waits outside :meth:`wait`)."""
        self._tick()

    def connected(self) -> list[int]:
        """Clients heard from within ``heartbeat_timeout``, by id."""
        now = self._clock()
        with self._lock:
            return self._contacts.connected(now=now)

    def snapshot(self) -> dict[str, Any]:
        """The live view ``sheaf status`` shows: contacts and the batch in progress."""
        now = self._clock()
        secagg = self.secagg.progress()
        with self._lock:
            work = self._work
            contacts = self._contacts.seconds_since_contact(now=now)
            pending = sorted(c for c, s in work.slots.items() if s.state != "done") if work else []
            return {
                "seconds_since_contact": contacts,
                "heartbeat_timeout": self.settings.heartbeat_timeout,
                "work": {"kind": work.kind, "round": work.round, "waiting_for": pending} if work else None,
                "secagg": secagg,
                "finished": self._finished,
                "bytes_sent": self._traffic["sent"],
                "bytes_received": self._traffic["received"],
            }

    def _sweep(self, now: float) -> None:
        """Log clients that just went silent (called with the lock held)."""
        for client_id, silent in self._contacts.newly_silent(now=now):
            log_event(
                _log,
                logging.WARNING,
                "client_lost",
                client=client_id,
                name=self.names.get(client_id, "?"),
                silent_seconds=silent,
            )

    # Work --------------------------------------------------------------------------------
    def post(self, work: Work) -> None:
        """Make a batch the current one; its clients may pull their tasks from now on."""
        with self._lock:
            work.posted = self._clock()
            self._work = work
        self._wake()

    def _wake(self) -> None:
        if self.wakeup is not None:
            self.wakeup()

    def task_for(self, client_id: int) -> tuple[bytes, list[bytes]] | None:
        """The task a pulling client should receive now (header, chunks), if any."""
        with self._lock:
            work = self._work
            slot = work.slots.get(client_id) if work is not None else None
            if work is not None and work.issue is not None and (slot is None or slot.state == "done"):
                slot = work.issue(client_id)  # open work: a new share, if there is one for it
                if slot is not None:
                    slot.issued = self._clock()
                    work.slots[client_id] = slot
            if work is None or slot is None or slot.state == "done":
                return None
            slot.state = "sent"  # a client that lost the stream may pull the same task again
            slot.pulls += 1
            return slot.header, slot.chunks if slot.chunks is not None else work.chunks

    def awaited(self, client_id: int, task_id: str) -> tuple[Work, Slot] | None:
        """The open batch and slot a result for ``task_id`` from this client would settle."""
        with self._lock:
            work = self._work
            slot = work.slots.get(client_id) if work is not None else None
            if work is None or slot is None or slot.task_id != task_id:
                return None
            return work, slot

    def expects(self, client_id: int, task_id: str) -> bool:
        """Whether a result for ``task_id`` from this client would still settle its share."""
        found = self.awaited(client_id, task_id)
        return found is not None and found[1].state != "done"

    def settle(
        self,
        client_id: int,
        task_id: str,
        update_id: str,
        *,
        result: ReceivedResult | None = None,
        failure: str = "",
        rejected: bool = False,
    ) -> tuple[str, str]:
        """Settle a client's share with its result, its failure, or a rejection.

        Returns:
            ``(status, detail)``: status is ``accepted``, ``duplicate`` (this update id
            settled it before), ``stale`` (not awaited: other task, or already settled) or
            ``rejected``.
        """
        with self._lock:
            if update_id in self._delivered.get(client_id, ()):
                return "duplicate", "this update was delivered before; ignored"
            work = self._work
            slot = work.slots.get(client_id) if work is not None else None
            if work is None or slot is None or slot.task_id != task_id:
                return "stale", f"task {task_id} is not awaited (its round is over, or it is unknown)"
            if slot.state == "done":
                if slot.update_id == update_id:
                    return "duplicate", "this update was delivered before; ignored"
                settled = slot.failure or "a result was accepted"
                return "stale", f"task {task_id} is already settled ({settled})"
            if not failure and result is not None and work.admit is not None:
                refused = work.admit(slot, result)  # open work: the driver's rules, made durable
                if refused is not None:
                    failure, rejected = refused, True
            slot.state, slot.update_id = "done", update_id
            self._delivered.setdefault(client_id, deque(maxlen=16)).append(update_id)
            if failure:
                slot.failure = failure
            else:
                slot.result = result
            if work.issue is not None:
                work.settled.append(slot)
            self._changed.notify_all()
        if failure:
            log_event(
                _log,
                logging.WARNING,
                "update_rejected" if rejected else "client_failed",
                client=client_id,
                round=work.round,
                kind=work.kind,
                reason=failure,
            )
        return ("rejected", failure) if rejected else ("accepted", "")

    def _fail_open(self, work: Work, now: float) -> bool:
        """Settle the shares of silent clients, and all open ones past the deadline; say if any."""
        timeout = self.settings.heartbeat_timeout
        late = now - work.posted >= self.settings.round_timeout
        settled = False
        for slot in work.slots.values():
            if slot.state == "done":
                continue
            silent = self._contacts.silent_for(slot.client_id, now=now)
            if silent > timeout:
                slot.failure = f"no contact for {silent:.0f} s (server.heartbeat_timeout={timeout:g} s)"
            elif work.issue is not None and now - slot.issued >= work.slot_timeout:
                slot.failure = f"no result within asynchronous.task_timeout={work.slot_timeout:g} s"
            elif late and work.issue is None:
                slot.failure = f"no result within server.round_timeout={self.settings.round_timeout:g} s"
            else:
                continue
            slot.state, settled = "done", True
            if work.issue is not None:
                work.settled.append(slot)
            log_event(
                _log, logging.WARNING, "client_dropped", client=slot.client_id, round=work.round, kind=work.kind,
                reason=slot.failure,
            )  # fmt: skip
        return settled

    def wait(self, work: Work, on_result: Callable[[int, ReceivedResult], ReceivedResult] | None = None) -> WorkOutcome:
        """Block until every share of ``work`` is settled; return what came back.

        Args:
            work: the batch posted with :meth:`post`.
            on_result: called, in this thread, with each accepted result as soon as it is
                in; what it returns is kept in its place (e.g. the result without its
                tensors, once they are added to a running sum).
        """
        taken: set[int] = set()
        while True:
            with self._lock:
                now = self._clock()
                self._sweep(now)
                dropped = self._fail_open(work, now)
                done = all(slot.state == "done" for slot in work.slots.values())
                fresh: list[tuple[Slot, ReceivedResult]] = []
                if on_result is not None:
                    fresh = [(s, s.result) for c, s in work.slots.items() if s.result is not None and c not in taken]
                taken.update(s.client_id for s, _ in fresh)
                if not done and not fresh:
                    deadline = work.posted + self.settings.round_timeout
                    self._changed.wait(timeout=max(0.01, min(0.25, deadline - now)))
            if dropped:  # a result still arriving for a dropped share is given up
                self._wake()
            for slot, result in fresh:  # outside the lock: results keep arriving meanwhile
                if on_result is not None:
                    slot.result = on_result(slot.client_id, result)
            if done:
                break
            self._tick()
        results = {c: s.result for c, s in sorted(work.slots.items()) if s.result is not None}
        failures = [ClientFailure(c, s.failure) for c, s in sorted(work.slots.items()) if s.failure]
        return WorkOutcome(results, failures, {c: s.pulls for c, s in sorted(work.slots.items()) if s.pulls})

    def take_settled(self, work: Work, timeout: float) -> list[Slot]:
        """(Open work) the shares settled since the last call, in the order they were
        settled; waits up to ``timeout`` seconds for one, dropping silent and late ones.

        Args:
            work: the open work posted with :meth:`post`.
            timeout: the longest wait, by real time.
        """
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                now = self._clock()
                self._sweep(now)
                dropped = self._fail_open(work, now)
                taken, work.settled = work.settled, []
                if not taken and time.monotonic() < deadline:
                    self._changed.wait(timeout=max(0.01, min(0.25, deadline - time.monotonic())))
            if dropped or taken:  # freed slots: waiting pulls look again (and late results for dropped shares stop)
                self._wake()
            self._tick()
            if taken or time.monotonic() >= deadline:
                return taken

    def wake(self) -> None:
        """Tell waiting pulls to look again (open work changed: a new model to train from)."""
        self._wake()

    def locked(self) -> threading.Lock:
        """The lock behind the shared state: open work's driver holds it to change what
        ``issue`` and ``admit`` read."""
        return self._lock

    def _tick(self, force: bool = False) -> None:
        """Call ``on_tick`` if a second has passed since the last call (or if forced)."""
        now = self._clock()
        if self.on_tick is not None and (force or now - self._last_tick >= 1.0):
            self._last_tick = now
            self.on_tick()

    def wait_for_clients(
        self, count: int, *, among: Sequence[int] | None = None, limit: float | None = None, round: int | None = None,
        report_every: float = 10.0,
    ) -> bool:  # fmt: skip
        """Block until at least ``count`` clients of ``among`` (default: every authorised one) are
        connected, by :func:`sheaf.deploy.quorum.wait_for_quorum` on this coordinator's clock
        (``limit`` in its seconds). Returns whether they are (False: the limit passed first)."""
        return wait_for_quorum(
            self.names if among is None else among, count, connected=self.connected, clock=self._clock,
            changed=self._changed, tick=self._tick, limit=limit, round=round, report_every=report_every,
        )  # fmt: skip

    # End ----------------------------------------------------------------------------------
    def finish(self) -> None:
        """Mark the run over: pulls and heartbeats tell clients to stop."""
        with self._lock:
            self._finished = True
            self._work = None
        self._wake()

    @property
    def finished(self) -> bool:
        """Whether the run is over."""
        return self._finished

    @property
    def work(self) -> Work | None:
        """The batch in progress, if any."""
        return self._work
