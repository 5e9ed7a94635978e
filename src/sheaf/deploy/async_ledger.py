"""The durable ledger of a deployed FedBuff run: tasks handed out, results buffered, dropouts.

Kept in tables of the run store's own SQLite file, beside the rounds (which
:class:`~sheaf.run.store.RunStore` writes), and written *before* the other side hears
anything: a task row before its task is streamed to the client, a buffered update (its
delta, examples, metrics, staleness) before its client is told "accepted". So a server
killed at any moment and started again knows every task it handed out (a result for one
of them is still accepted; a result for any other task is refused as unknown) and every
update it accepted for the steps not yet committed (the buffer is *persisted*, never
re-requested). Each write is one transaction in WAL mode.

Rows are tagged with the server step they belong to (the step being filled when they
arrived); a step's rows are read back only while that step is not committed, so a crash
between committing a step and pruning its rows changes nothing. The rows of the last
committed step are kept until the next step (what it aggregated can be checked against
it, :func:`~sheaf.run.buffered.buffer_step`); older ones are deleted.

Example:
    >>> import tempfile, pathlib, numpy as np
    >>> from sheaf.core.update import Update
    >>> ledger = AsyncLedger(pathlib.Path(tempfile.mkdtemp()) / "run.sqlite")
    >>> ledger.issue(3, version=0)
    >>> ledger.accept(1, Update(3, Params({"w": np.ones(2)}), 5, {"train_loss": 0.5}), version=0, staleness=0)
    >>> [(u.client_id, u.num_examples, s) for u, s in ledger.buffered(1)], ledger.open_tasks()
    ([(3, 5, 0)], [])
    >>> ledger.close()
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sheaf.core.errors import ClientFailure, StoreError
from sheaf.core.params import Params
from sheaf.core.tensor import array_from_record, array_to_record
from sheaf.core.update import Update

__all__ = ["AsyncLedger"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS async_tasks (
    client_id INTEGER NOT NULL, version INTEGER NOT NULL, outcome TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (client_id, version));
CREATE TABLE IF NOT EXISTS async_results (
    step INTEGER NOT NULL, seq INTEGER NOT NULL, client_id INTEGER NOT NULL, version INTEGER NOT NULL,
    staleness INTEGER NOT NULL, num_examples INTEGER NOT NULL, metrics TEXT NOT NULL, reason TEXT NOT NULL,
    PRIMARY KEY (step, seq));
CREATE TABLE IF NOT EXISTS async_tensors (
    step INTEGER NOT NULL, seq INTEGER NOT NULL, idx INTEGER NOT NULL, name TEXT NOT NULL,
    dtype TEXT NOT NULL, shape TEXT NOT NULL, data BLOB NOT NULL, PRIMARY KEY (step, seq, idx));
"""


class AsyncLedger:
    """The tables of a deployed FedBuff run (see the module docstring).

    Args:
        path: the run store.

    Raises:
        StoreError: if the file cannot be opened or written.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        try:
            # Written from the server's event loop and its main thread: one connection, one lock.
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA busy_timeout=10000")
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
            row = self._db.execute("SELECT MAX(seq) FROM async_results").fetchone()
        except sqlite3.Error as exc:
            raise StoreError(f"cannot keep the asynchronous ledger in {str(path)!r}: {exc}") from None
        self._seq = int(row[0]) + 1 if row and row[0] is not None else 0

    def _write(self, statements: Sequence[tuple[str, Any]]) -> None:
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                for sql, args in statements:
                    if isinstance(args, list):
                        self._db.executemany(sql, args)
                    else:
                        self._db.execute(sql, args)
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise StoreError(f"cannot write the asynchronous ledger: {exc}") from None

    def _next_seq(self) -> int:
        seq, self._seq = self._seq, self._seq + 1
        return seq

    # Writing -----------------------------------------------------------------------------
    def issue(self, client_id: int, version: int) -> None:
        """Write down a task handed to ``client_id`` from model ``version`` (before it is sent)."""
        self._write([("INSERT OR IGNORE INTO async_tasks VALUES (?, ?, '')", (client_id, version))])

    def accept(self, step: int, update: Update, *, version: int, staleness: int) -> None:
        """Buffer an accepted update for ``step`` and close its task, in one transaction."""
        seq = self._next_seq()
        tensors = []
        for idx, (name, array) in enumerate(update.delta.items()):
            dtype, shape, data = array_to_record(array)
            tensors.append((step, seq, idx, name, dtype, json.dumps(shape), data))
        row = (step, seq, update.client_id, version, staleness, update.num_examples, json.dumps(dict(update.metrics)))
        self._write(
            [
                ("INSERT INTO async_results VALUES (?, ?, ?, ?, ?, ?, ?, '')", row),
                ("INSERT INTO async_tensors VALUES (?, ?, ?, ?, ?, ?, ?)", tensors),
                ("UPDATE async_tasks SET outcome = 'accepted' WHERE client_id = ? AND version = ?", (update.client_id, version)),
            ]
        )  # fmt: skip

    def drop(self, step: int, client_id: int, version: int, reason: str) -> None:
        """Record a task that ended without an update (its reason), against ``step``."""
        row = (step, self._next_seq(), client_id, version, -1, 0, "{}", reason or "dropped")
        self._write(
            [
                ("INSERT INTO async_results VALUES (?, ?, ?, ?, ?, ?, ?, ?)", row),
                ("UPDATE async_tasks SET outcome = 'dropped' WHERE client_id = ? AND version = ?", (client_id, version)),
            ]
        )  # fmt: skip

    def prune(self, committed: int) -> None:
        """Forget what steps before ``committed`` (the last committed step) held, and the
        closed tasks of model versions before it."""
        self._write(
            [
                ("DELETE FROM async_tensors WHERE step < ?", (committed,)),
                ("DELETE FROM async_results WHERE step < ?", (committed,)),
                ("DELETE FROM async_tasks WHERE outcome != '' AND version < ?", (committed,)),
            ]
        )

    # Reading -----------------------------------------------------------------------------
    def buffered(self, step: int) -> list[tuple[Update, int]]:
        """``(update, staleness)`` of every update accepted for ``step``, in arrival order."""
        with self._lock:
            rows = self._db.execute(
                "SELECT seq, client_id, staleness, num_examples, metrics FROM async_results "
                "WHERE step = ? AND reason = '' ORDER BY seq",
                (step,),
            ).fetchall()
            found = []
            for seq, client_id, staleness, examples, metrics in rows:
                arrays = self._db.execute(
                    "SELECT name, dtype, shape, data FROM async_tensors WHERE step = ? AND seq = ? ORDER BY idx",
                    (step, seq),
                ).fetchall()
                delta = Params({n: array_from_record(d, json.loads(s), b) for n, d, s, b in arrays})
                found.append((Update(int(client_id), delta, int(examples), json.loads(metrics)), int(staleness)))
        return found

    def dropouts(self, step: int) -> list[ClientFailure]:
        """The tasks recorded as ended without an update against ``step``, in order."""
        with self._lock:
            rows = self._db.execute(
                "SELECT client_id, reason FROM async_results WHERE step = ? AND reason != '' ORDER BY seq", (step,)
            ).fetchall()
        return [ClientFailure(int(c), str(r)) for c, r in rows]

    def steps_after(self, committed: int) -> dict[int, int]:
        """Step -> how many updates are buffered for it, for the steps after ``committed``."""
        with self._lock:
            rows = self._db.execute(
                "SELECT step, COUNT(*) FROM async_results WHERE step > ? AND reason = '' GROUP BY step", (committed,)
            ).fetchall()
        return {int(s): int(n) for s, n in rows}

    def open_tasks(self) -> list[tuple[int, int]]:
        """``(client, version)`` of every task handed out and not closed, by client."""
        with self._lock:
            rows = self._db.execute(
                "SELECT client_id, version FROM async_tasks WHERE outcome = '' ORDER BY client_id"
            ).fetchall()
        return [(int(c), int(v)) for c, v in rows]

    def issued(self, version: int) -> list[int]:
        """The clients handed a task from model ``version``."""
        with self._lock:
            rows = self._db.execute(
                "SELECT client_id FROM async_tasks WHERE version = ? ORDER BY client_id", (version,)
            ).fetchall()
        return [int(c) for (c,) in rows]

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self._db.close()
