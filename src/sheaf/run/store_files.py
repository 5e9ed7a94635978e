"""The run store's files: created whole or not at all, and what an interrupted creation leaves.

A run store is one SQLite file (with, while it is open in WAL mode, a ``-wal`` and a
``-shm`` file beside it). :meth:`~sheaf.run.store.RunStore.create` writes a new store under
a temporary name — ``.<name>.<pid>.<random>.creating`` in the same folder — and gives it its
name only once round 0 is committed and the file closed, so a process killed at any moment
of the creation leaves no file under the store's name, and the same command creates the
store again. What a killed creator left behind is removed by the next creation of the same
store once the process that made it is gone.

Stores created by sheaf before this could be left half-made by a kill: an empty file, or a
SQLite file without a single table. :func:`holds_nothing` recognises those — they hold no
data, so nothing is lost by creating the store afresh in their place.

Example:
    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "run.sqlite"
    >>> path.write_bytes(b"")
    0
    >>> holds_nothing(path), temporary_name(path).name.endswith(".creating")
    (True, True)
"""

from __future__ import annotations

import os
import secrets
import sqlite3
from pathlib import Path

__all__ = ["holds_nothing", "remove_abandoned", "remove_files", "temporary_name"]

_CREATING = ".creating"


def temporary_name(path: Path) -> Path:
    """Where this process writes a new store for ``path`` before it takes its name."""
    return path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}{_CREATING}")


def remove_files(database: Path) -> None:
    """Remove a SQLite database's file and its write-ahead log and shared-memory files."""
    for file in (database, database.with_name(database.name + "-wal"), database.with_name(database.name + "-shm")):
        file.unlink(missing_ok=True)


def remove_abandoned(path: Path) -> None:
    """Remove the half-created stores of ``path`` that processes no longer running left."""
    for leftover in path.parent.glob(f".{path.name}.*{_CREATING}"):
        pid = leftover.name[len(path.name) + 2 :].split(".", 1)[0]
        if pid.isdigit() and not _running(int(pid)):
            remove_files(leftover)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def holds_nothing(path: Path) -> bool:
    """Whether ``path`` is an empty file or a SQLite database without a single table."""
    try:
        if path.stat().st_size == 0:
            return True
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            tables = db.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()[0]
        finally:
            db.close()
    except (OSError, sqlite3.Error):
        return False
    return int(tables) == 0
