"""The server's contact book: when each client was last heard from, and who went silent.

Any request from a client counts as a heartbeat. A client is *silent* once no request has
come from it for ``server.heartbeat_timeout`` seconds; one never heard from is counted
from the server's start (a server restarted by its operator gives every client the full
timeout again). A client heard from again after going silent is *back*.

The book holds no lock and reads no clock: its owner, the
:class:`~sheaf.deploy.coordinator.Coordinator`, calls it under its own lock with the time
from its own clock (a test's clock, in tests), and logs what it says.

Example:
    >>> book = Contacts(heartbeat_timeout=5.0, started=100.0)
    >>> book.heard(0, now=101.0), book.heard(0, now=102.0)
    ('client_connected', None)
    >>> book.silent_for(0, now=110.0), book.silent_for(1, now=110.0)
    (8.0, 10.0)
    >>> book.connected(now=106.0), book.newly_silent(now=110.0), book.newly_silent(now=111.0)
    ([0], [(0, 8.0)], [])
    >>> book.heard(0, now=112.0)
    'client_back'
"""

from __future__ import annotations

__all__ = ["Contacts"]


class Contacts:
    """When each client was last heard from (see the module docstring).

    Args:
        heartbeat_timeout: seconds without a request after which a client is silent.
        started: the server's start, by its clock: the silence of a client never heard
            from counts from here.
    """

    def __init__(self, *, heartbeat_timeout: float, started: float) -> None:
        self.heartbeat_timeout = heartbeat_timeout
        self.started = started
        self._last_seen: dict[int, float] = {}
        self._lost: set[int] = set()

    def heard(self, client_id: int, *, now: float) -> str | None:
        """Record a request from a client.

        Returns:
            ``client_connected`` the first time it is heard from, ``client_back`` if it had
            gone silent, else None: the event to log.
        """
        first = client_id not in self._last_seen
        back = client_id in self._lost
        self._last_seen[client_id] = now
        self._lost.discard(client_id)
        return "client_connected" if first else "client_back" if back else None

    def silent_for(self, client_id: int, *, now: float) -> float:
        """Seconds since the last request from a client (since the server's start if none)."""
        return now - max(self._last_seen.get(client_id, self.started), self.started)

    def connected(self, *, now: float) -> list[int]:
        """Clients heard from within ``heartbeat_timeout``, by id."""
        return sorted(c for c, seen in self._last_seen.items() if now - seen <= self.heartbeat_timeout)

    def seconds_since_contact(self, *, now: float) -> dict[str, float]:
        """Seconds since each client heard from was last heard, by id (one decimal), for ``sheaf status``."""
        return {str(c): round(now - seen, 1) for c, seen in sorted(self._last_seen.items())}

    def newly_silent(self, *, now: float) -> list[tuple[int, float]]:
        """The clients heard from that went silent since the last call, with their silence
        in seconds; each is reported once until it is heard from again."""
        lost = []
        for client_id, seen in self._last_seen.items():
            if client_id not in self._lost and now - seen > self.heartbeat_timeout:
                self._lost.add(client_id)
                lost.append((client_id, now - seen))
        return lost
