"""Refusal logs that a flood cannot turn into a flood of log lines.

A server logs every request it refuses, with the reason: that is how an operator sees an
unknown key, a replay or a malformed request. But anyone who can reach the port can send
refused requests as fast as the network carries them, and one line each would fill the
disk and drown the lines that matter. :class:`RefusalLog` writes at most ``burst`` lines
per peer in each ``window`` of seconds, then counts what it leaves out and says so in one
``refusals_suppressed`` line when the peer's next window opens. A peer is its address
without the port (a new connection does not reset the count); at most ``peers`` peers are
remembered, the least recently refused forgotten first, so the log's own memory is bounded.

Example:
    >>> import logging
    >>> seen = []
    >>> class Keep(logging.Handler):
    ...     def emit(self, record): seen.append(record.getMessage())
    >>> logger = logging.getLogger("sheaf.example.refusals")
    >>> logger.addHandler(Keep())
    >>> logger.setLevel(logging.INFO)
    >>> now = [0.0]
    >>> refusals = RefusalLog(logger, burst=2, window=60.0, clock=lambda: now[0])
    >>> for _ in range(5):
    ...     refusals.log("ipv4:10.0.0.7:51234", "request_refused", reason="unknown client key")
    >>> now[0] = 61.0
    >>> refusals.log("ipv4:10.0.0.7:60000", "request_refused", reason="unknown client key")
    >>> seen
    ['request_refused', 'request_refused', 'refusals_suppressed', 'request_refused']
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sheaf.deploy.logs import log_event

__all__ = ["RefusalLog", "peer_host"]


def peer_host(peer: str) -> str:
    """A peer's address without its port (``ipv4:10.0.0.7:51234`` -> ``ipv4:10.0.0.7``).

    Example:
        >>> peer_host("ipv6:[::1]:7443"), peer_host("in-process-3")
        ('ipv6:[::1]', 'in-process-3')
    """
    if peer.startswith(("ipv4:", "ipv6:")) and peer.count(":") >= 2:
        return peer.rsplit(":", 1)[0]
    return peer


@dataclass
class _Window:
    start: float
    logged: int = 0
    suppressed: int = 0


class RefusalLog:
    """Logs refusals, at most ``burst`` per peer per ``window`` seconds (see the module).

    Args:
        logger: where the lines go.
        burst: the most lines per peer in one window.
        window: seconds.
        peers: the most peers remembered.
        clock: monotonic seconds (for tests).
    """

    def __init__(
        self,
        logger: logging.Logger,
        *,
        burst: int = 10,
        window: float = 60.0,
        peers: int = 4096,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.logger = logger
        self.burst = burst
        self.window = window
        self.peers = peers
        self._clock = clock
        self._lock = threading.Lock()
        self._windows: OrderedDict[str, _Window] = OrderedDict()

    def log(self, peer: str, event: str, **fields: Any) -> None:
        """Log ``event`` for ``peer`` at WARNING, unless this peer's window is full."""
        host = peer_host(peer)
        now = self._clock()
        summary: _Window | None = None
        with self._lock:
            window = self._windows.get(host)
            if window is None or now - window.start >= self.window:
                summary = window if window is not None and window.suppressed else None
                window = _Window(now)
            self._windows[host] = window
            self._windows.move_to_end(host)
            while len(self._windows) > self.peers:
                self._windows.popitem(last=False)
            write = window.logged < self.burst
            if write:
                window.logged += 1
            else:
                window.suppressed += 1
        if summary is not None:
            log_event(
                self.logger, logging.WARNING, "refusals_suppressed", peer=host, suppressed=summary.suppressed,
                seconds=round(now - summary.start, 1),
            )  # fmt: skip
        if write:
            log_event(self.logger, logging.WARNING, event, peer=peer, **fields)
