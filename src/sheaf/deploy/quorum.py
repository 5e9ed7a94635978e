"""Waiting for a quorum: the loop that blocks until enough clients are connected.

A deployed server waits here before its first round (for ``strategy.min_clients`` of its
clients) and before a round with too few of its cohort connected (up to
``server.min_clients_wait`` seconds). This module owns the loop
and its two log lines: ``waiting_for_clients`` (who is awaited, every ``report_every``
seconds) and ``clients_not_back`` (the limit passed first). Who is connected, the clock,
the status tick and the condition notified when something changes belong to the caller —
the coordinator (:meth:`sheaf.deploy.coordinator.Coordinator.wait_for_clients`) hands in
its contact book, its clock and its condition variable — so the loop runs in a test with
a made-up clock and no server.

Example:
    >>> import threading
    >>> heard = iter([[1], [1, 4], [1, 3]])  # who is connected at each look
    >>> wait_for_quorum([1, 2, 3], 2, connected=heard.__next__, clock=lambda: 0.0, changed=threading.Condition())
    True
    >>> clock = iter([0.0, 0.0, 5.0]).__next__
    >>> wait_for_quorum([1, 2], 2, connected=lambda: [1], clock=clock, changed=threading.Condition(), limit=5.0)
    False
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable

from sheaf.deploy.logs import log_event

__all__ = ["wait_for_quorum"]

_log = logging.getLogger("sheaf.server")


def _seconds(seconds: float) -> float:
    """Seconds to one decimal, for the log."""
    return float(f"{seconds:.1f}")


def _no_tick() -> None:
    """The default tick: nothing to do between looks."""


def wait_for_quorum(
    pool: Iterable[int],
    count: int,
    *,
    connected: Callable[[], Iterable[int]],
    clock: Callable[[], float],
    changed: threading.Condition,
    tick: Callable[[], None] = _no_tick,
    limit: float | None = None,
    round: int | None = None,
    report_every: float = 10.0,
) -> bool:
    """Block until at least ``count`` clients of ``pool`` are connected, logging who is awaited.

    Args:
        pool: which clients count.
        count: how many of them must be connected.
        connected: the clients connected now.
        clock: monotonic seconds; ``limit`` and ``report_every`` are counted by it.
        changed: notified when something changed; waited on (up to 0.2 s) between looks.
        tick: called once per look that finds too few (the server's status writer).
        limit: give up after this many seconds of ``clock`` (None: never).
        round: the round that waits (for the log).
        report_every: seconds between ``waiting_for_clients`` lines.

    Returns:
        Whether ``count`` are connected (False: the limit passed first).
    """
    awaited = set(pool)
    started = clock()
    last_report = started - report_every
    context = {} if round is None else {"round": round}
    while len(now_connected := awaited.intersection(connected())) < count:
        now = clock()
        if limit is not None and now - started >= limit:
            log_event(
                _log, logging.WARNING, "clients_not_back", **context, connected=len(now_connected), needed=count,
                waited_seconds=_seconds(now - started),
            )  # fmt: skip
            return False
        if now - last_report >= report_every:
            last_report = now
            missing = sorted(awaited - now_connected)
            log_event(
                _log, logging.INFO, "waiting_for_clients", **context, connected=len(now_connected), needed=count,
                not_connected=missing[:20],
            )  # fmt: skip
        tick()
        with changed:
            changed.wait(timeout=0.2)
    return True
