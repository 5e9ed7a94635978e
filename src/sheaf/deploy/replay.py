"""Replay protection that outlives the server: the nonces it has seen, kept in its run store.

Every signed request carries a fresh nonce, and the verifier refuses a nonce it has seen
while the request's time is within the window (:mod:`sheaf.deploy.auth`). Kept in memory
only, that memory died with the server: a request captured before a ``kill -9`` was
accepted again by the restarted server. So the server writes each verified request's nonce
— before it answers the request — to a table of the run store's own SQLite file
(``seen_nonces``: nonce, expiry), and a restarted server reads back the ones whose window
has not passed. Each write is its own small transaction in WAL mode with
``synchronous=NORMAL``: on disk as far as a killed process is concerned (the operating
system holds it), without a flush to the platter per request. Expired nonces are deleted
as the server goes.

The table lives beside the run's tables but is not part of a run's record: ``sheaf
status`` and reports never read it.

Example:
    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "run.sqlite"
    >>> seen = SeenNonces(path, clock=lambda: 1000.0)
    >>> seen.remember("a" * 32, expires=1300.0)
    >>> seen.remember("b" * 32, expires=900.0)
    >>> SeenNonces(path, clock=lambda: 1000.0).live()   # as a restarted server reads them
    [('aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa', 1300.0)]
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

from sheaf.core.errors import StoreError

__all__ = ["SeenNonces"]

_SCHEMA = "CREATE TABLE IF NOT EXISTS seen_nonces (nonce TEXT PRIMARY KEY, expires REAL NOT NULL)"
#: Expired nonces are deleted after this many writes.
_PRUNE_EVERY = 1000


class SeenNonces:
    """The nonces of verified requests, in the run store's file (see the module docstring).

    Args:
        path: the run store.
        clock: the time in seconds (the verifier's clock: wall time, which survives a restart).

    Raises:
        StoreError: if the file cannot be opened or written.
    """

    def __init__(self, path: Path, *, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._writes = 0
        try:
            # Written from the server's event loop, opened here: one connection, one lock.
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA busy_timeout=10000")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute(_SCHEMA)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot keep the seen nonces in {str(path)!r}: {exc}") from None

    def live(self) -> list[tuple[str, float]]:
        """The nonces whose window has not passed, ``(nonce, expiry)``; the others are deleted."""
        with self._lock:
            self._db.execute("DELETE FROM seen_nonces WHERE expires < ?", (self._clock(),))
            rows = self._db.execute("SELECT nonce, expires FROM seen_nonces ORDER BY expires").fetchall()
        return [(str(nonce), float(expires)) for nonce, expires in rows]

    def remember(self, nonce: str, expires: float) -> None:
        """Write down a verified request's nonce until ``expires``."""
        with self._lock:
            try:
                self._db.execute("INSERT OR IGNORE INTO seen_nonces VALUES (?, ?)", (nonce, expires))
                self._writes += 1
                if self._writes % _PRUNE_EVERY == 0:
                    self._db.execute("DELETE FROM seen_nonces WHERE expires < ?", (self._clock(),))
            except sqlite3.Error as exc:  # refuse the request rather than forget its nonce
                raise StoreError(f"cannot write down a request's nonce: {exc}") from None

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self._db.close()
