"""RunStore: a run as one SQLite file — config, rounds, client metrics, params, state.

Each finished round is written in **one transaction**: its record, the global params it
produced, the strategy state, the clients' metrics and the failures. A reader (or a
restarted run) therefore sees whole rounds only. The database runs in WAL mode so
``sheaf report`` can read while a run writes.

Round 0 holds the initial params and state. A client may have more than one record of a
round and phase — in FedBuff a client can have two updates in one step's buffer (it trained
from an older model, then again after a step) — so client records are keyed by
``(round, client_id, phase, entry)``, ``entry`` counting them from 0 in the order given.

**Formats.** ``format_version`` 2 added ``entry`` to that key. A format 1 store (every
client record ``entry`` 0) is read as it is and converted, in one transaction, when it is
opened to write; a store of a format this code does not know is refused. Tensors are stored as raw bytes with dtype
and shape (:mod:`sheaf.core.tensor`); state trees as JSON plus tensors
(:mod:`sheaf.core.tree`). Nothing is pickled.

Example:
    >>> import tempfile, pathlib, numpy as np
    >>> from sheaf.core.params import Params
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "run.sqlite"
    >>> store = RunStore.create(path, {"seed": 0}, Params({"w": np.zeros(2)}), state=())
    >>> store.last_round, store.params()["w"].tolist()
    (0, [0.0, 0.0])
    >>> store.close()
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from sheaf.core.errors import ClientFailure, StoreError
from sheaf.core.params import Params
from sheaf.core.tensor import array_from_record, array_to_record
from sheaf.core.tree import decode_tree, encode_tree
from sheaf.core.update import TensorGroups
from sheaf.evaluation.history import ClientRecord, History, RoundRecord
from sheaf.run.store_files import remove_abandoned, remove_files, temporary_name

__all__ = ["FORMAT_VERSION", "RunStore"]

FORMAT_VERSION = 2

#: The formats :meth:`RunStore.open` reads; older ones are converted when opened to write.
_READABLE = (1, 2)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS rounds (
    round INTEGER PRIMARY KEY, finished REAL NOT NULL, record TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS client_metrics (
    round INTEGER NOT NULL, client_id INTEGER NOT NULL, phase TEXT NOT NULL,
    num_examples INTEGER NOT NULL, metrics TEXT NOT NULL, entry INTEGER NOT NULL,
    PRIMARY KEY (round, client_id, phase, entry));
CREATE TABLE IF NOT EXISTS failures (
    round INTEGER NOT NULL, client_id INTEGER NOT NULL, phase TEXT NOT NULL, reason TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS tensors (
    round INTEGER NOT NULL, owner TEXT NOT NULL, idx INTEGER NOT NULL, name TEXT NOT NULL,
    dtype TEXT NOT NULL, shape TEXT NOT NULL, data BLOB NOT NULL,
    PRIMARY KEY (round, owner, idx));
CREATE TABLE IF NOT EXISTS client_states (
    client_id INTEGER PRIMARY KEY, round INTEGER NOT NULL, structure TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS client_tensors (
    client_id INTEGER NOT NULL, idx INTEGER NOT NULL,
    dtype TEXT NOT NULL, shape TEXT NOT NULL, data BLOB NOT NULL,
    PRIMARY KEY (client_id, idx));
CREATE TABLE IF NOT EXISTS states (
    round INTEGER NOT NULL, owner TEXT NOT NULL, structure TEXT NOT NULL,
    PRIMARY KEY (round, owner));
CREATE TABLE IF NOT EXISTS client_traffic (
    round INTEGER NOT NULL, client_id INTEGER NOT NULL, download INTEGER NOT NULL, upload INTEGER NOT NULL,
    PRIMARY KEY (round, client_id));
"""

#: Tables added after format 1 was fixed: created when an older store is opened to write.
_ADDED = "client_traffic"

#: Format 1 -> 2: ``entry`` joins the key of ``client_metrics`` (SQLite cannot change a key in place).
_TO_FORMAT_2 = """
CREATE TABLE client_metrics_2 (
    round INTEGER NOT NULL, client_id INTEGER NOT NULL, phase TEXT NOT NULL,
    num_examples INTEGER NOT NULL, metrics TEXT NOT NULL, entry INTEGER NOT NULL,
    PRIMARY KEY (round, client_id, phase, entry));
INSERT INTO client_metrics_2 SELECT round, client_id, phase, num_examples, metrics, 0 FROM client_metrics;
DROP TABLE client_metrics;
ALTER TABLE client_metrics_2 RENAME TO client_metrics;
UPDATE meta SET value = '2' WHERE key = 'format_version'
"""


class RunStore:
    """The SQLite file of one run. Create with :meth:`create`, reopen with :meth:`open`."""

    def __init__(self, path: Path, connection: sqlite3.Connection) -> None:
        self.path = path
        self._db = connection
        self._format = FORMAT_VERSION  # open() sets the format it found (1: read as it is)

    # Opening -----------------------------------------------------------------------
    @staticmethod
    def _connect(path: Path, readonly: bool) -> sqlite3.Connection:
        try:
            if readonly:
                db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)
            else:
                db = sqlite3.connect(path, isolation_level=None)
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=NORMAL")
            db.execute("PRAGMA busy_timeout=10000")
            return db
        except sqlite3.DatabaseError as exc:
            if "not a database" in str(exc):
                raise StoreError(f"{str(path)!r} is not a sheaf run store (not a SQLite database)") from None
            raise StoreError(f"cannot open run store {str(path)!r}: {exc}") from None
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open run store {str(path)!r}: {exc}") from None

    @classmethod
    def create(
        cls,
        path: str | Path,
        config: Mapping[str, Any],
        params: Params,
        state: object,
        meta: Mapping[str, Any] | None = None,
    ) -> RunStore:
        """Create a new run store holding the config and round 0 (initial params and state).

        The store is written whole under a temporary name beside ``path`` and only then
        given its name, so a process killed while creating it leaves no file at ``path``
        (the same command creates it again; leftovers of dead processes are removed).

        Raises:
            StoreError: if the file already exists or cannot be written.
        """
        path = Path(path)
        if path.exists():
            raise StoreError(f"run store {str(path)!r} already exists; choose another run name or delete it")
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_abandoned(path)
        temporary = temporary_name(path)
        try:
            cls._write_new(temporary, config, params, state, meta)
            try:
                os.link(temporary, path)  # never replaces a store another process created meanwhile
            except FileExistsError:
                raise StoreError(
                    f"run store {str(path)!r} already exists; choose another run name or delete it"
                ) from None
        finally:
            remove_files(temporary)
        return cls(path, cls._connect(path, readonly=False))

    @classmethod
    def _write_new(
        cls, path: Path, config: Mapping[str, Any], params: Params, state: object, meta: Mapping[str, Any] | None
    ) -> None:
        """Write a whole new store at ``path``: schema, meta and round 0, in one transaction."""
        store = cls(path, cls._connect(path, readonly=False))
        try:
            with store._transaction():
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        store._db.execute(statement)
                entries = {
                    "format_version": FORMAT_VERSION,
                    "config": dict(config),
                    "created": time.time(),
                    "status": "running",
                    **dict(meta or {}),
                }
                rows = [(k, json.dumps(v)) for k, v in entries.items()]
                store._db.executemany("INSERT INTO meta VALUES (?, ?)", rows)
                store._write_round_arrays(0, params, state)
        finally:
            store.close()  # the last connection: SQLite folds its write-ahead log into the file

    @classmethod
    def open(cls, path: str | Path, *, readonly: bool = False) -> RunStore:
        """Open an existing run store.

        Raises:
            StoreError: if it is missing, not a SQLite file, or not a sheaf run store.
        """
        path = Path(path)
        if not path.is_file():
            raise StoreError(f"run store {str(path)!r} not found; pass the .sqlite file of a run (see runs/)")
        store = cls(path, cls._connect(path, readonly))
        try:
            version = store.meta.get("format_version")
        except sqlite3.DatabaseError:
            store.close()
            raise StoreError(f"{str(path)!r} is not a sheaf run store (not a SQLite database)") from None
        if version not in _READABLE:
            store.close()
            if isinstance(version, int) and version > FORMAT_VERSION:
                raise StoreError(
                    f"{str(path)!r} is a run store of format {version}, newer than this sheaf reads "
                    f"({FORMAT_VERSION}); open it with the sheaf that wrote it, or upgrade sheaf"
                )
            raise StoreError(f"{str(path)!r} is not a sheaf run store of format {FORMAT_VERSION} (found {version!r})")
        if not readonly:
            for statement in _SCHEMA.split(";"):
                if _ADDED in statement:
                    store._db.execute(statement)
            if version == 1:
                store._upgrade_from_1()
                version = FORMAT_VERSION
        store._format = version
        return store

    def _upgrade_from_1(self) -> None:
        """Convert a format 1 store to format 2, in one transaction (a second writer that
        opened it meanwhile finds it converted and does nothing)."""
        with self._transaction():
            if self.meta.get("format_version") == 1:
                for statement in _TO_FORMAT_2.split(";"):
                    self._db.execute(statement)

    def close(self) -> None:
        """Close the database connection."""
        self._db.close()

    def __enter__(self) -> RunStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _transaction(self) -> _Transaction:
        return _Transaction(self._db)

    # Reading -----------------------------------------------------------------------
    @property
    def meta(self) -> dict[str, Any]:
        """Every meta entry (config, format version, status, ...)."""
        rows = self._db.execute("SELECT key, value FROM meta").fetchall()
        return {k: json.loads(v) for k, v in rows}

    @property
    def config(self) -> dict[str, Any]:
        """The run's config as a nested dict."""
        config: dict[str, Any] = self.meta["config"]
        return config

    @property
    def last_round(self) -> int:
        """The last committed round (0 if none has finished)."""
        row = self._db.execute("SELECT MAX(round) FROM rounds").fetchone()
        return int(row[0]) if row and row[0] is not None else 0

    def history(self) -> History:
        """Every committed round's record, in order."""
        rows = self._db.execute("SELECT record FROM rounds ORDER BY round").fetchall()
        return History([RoundRecord.from_dict(json.loads(r[0])) for r in rows])

    def finished_times(self) -> list[tuple[int, float]]:
        """``(round, epoch seconds when it was committed)`` of every committed round, in order."""
        rows = self._db.execute("SELECT round, finished FROM rounds ORDER BY round").fetchall()
        return [(int(r), float(t)) for r, t in rows]

    def _arrays(self, round: int, owner: str) -> list[tuple[str, Any]]:
        rows = self._db.execute(
            "SELECT name, dtype, shape, data FROM tensors WHERE round = ? AND owner = ? ORDER BY idx",
            (round, owner),
        ).fetchall()
        return [(name, array_from_record(dtype, json.loads(shape), data)) for name, dtype, shape, data in rows]

    def params(self, round: int | None = None) -> Params:
        """The global params after ``round`` (default: the last committed round).

        Raises:
            StoreError: if that round's params are not stored (never committed, or pruned).
        """
        round = self.last_round if round is None else round
        arrays = self._arrays(round, "params")
        if not arrays:
            raise StoreError(f"run store {str(self.path)!r} holds no params for round {round}")
        return Params(dict(arrays))

    def state(self, round: int | None = None, template: object = None) -> Any:
        """The strategy state after ``round``, rebuilt with ``template``'s types.

        Raises:
            StoreError: if that round's state is not stored.
        """
        round = self.last_round if round is None else round
        row = self._db.execute(
            "SELECT structure FROM states WHERE round = ? AND owner = 'strategy'", (round,)
        ).fetchone()
        if row is None:
            raise StoreError(f"run store {str(self.path)!r} holds no strategy state for round {round}")
        arrays = [a for _, a in self._arrays(round, "strategy")]
        return decode_tree(row[0], arrays, template)

    def client_states(self, client_ids: Iterable[int]) -> dict[int, TensorGroups]:
        """The latest persistent state of each given client that has one."""
        ids = list(dict.fromkeys(int(c) for c in client_ids))
        found: dict[int, TensorGroups] = {}
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            rows = self._db.execute(
                f"SELECT client_id, structure FROM client_states WHERE client_id IN ({marks})", chunk
            )
            for client_id, structure in rows.fetchall():
                tensors = self._db.execute(
                    "SELECT dtype, shape, data FROM client_tensors WHERE client_id = ? ORDER BY idx", (client_id,)
                ).fetchall()
                arrays = [array_from_record(d, json.loads(s), b) for d, s, b in tensors]
                found[int(client_id)] = decode_tree(structure, arrays)
        return found

    @property
    def clients_with_state(self) -> int:
        """How many clients have a persistent state stored."""
        return int(self._db.execute("SELECT COUNT(*) FROM client_states").fetchone()[0])

    def client_records(self, round: int | None = None, phase: str | None = None) -> list[tuple[int, ClientRecord]]:
        """``(round, record)`` for client metrics, optionally of one round and/or phase."""
        query = "SELECT round, client_id, phase, num_examples, metrics FROM client_metrics WHERE 1=1"
        args: list[Any] = []
        if round is not None:
            query += " AND round = ?"
            args.append(round)
        if phase is not None:
            query += " AND phase = ?"
            args.append(phase)
        order = " ORDER BY round, phase, client_id" + (", entry" if self._format >= 2 else "")
        rows = self._db.execute(query + order, args).fetchall()
        return [(r, ClientRecord(c, p, n, json.loads(m))) for r, c, p, n, m in rows]

    def client_traffic(self, round: int | None = None) -> list[tuple[int, int, int, int]]:
        """``(round, client_id, download bytes, upload bytes)`` of every client sent a task
        to train, optionally of one round (see :mod:`sheaf.run.traffic`)."""
        query = "SELECT round, client_id, download, upload FROM client_traffic"
        args: list[Any] = []
        if round is not None:
            query += " WHERE round = ?"
            args.append(round)
        try:
            rows = self._db.execute(query + " ORDER BY round, client_id", args).fetchall()
        except sqlite3.OperationalError:  # a store written before traffic was counted
            return []
        return [(int(r), int(c), int(d), int(u)) for r, c, d, u in rows]

    def last_sent(self) -> dict[int, int]:
        """Client id -> the last round it was sent a model to train from."""
        try:
            rows = self._db.execute(
                "SELECT client_id, MAX(round) FROM client_traffic WHERE download > 0 GROUP BY client_id"
            ).fetchall()
        except sqlite3.OperationalError:
            return {}
        return {int(c): int(r) for c, r in rows}

    def failures(self) -> list[tuple[int, int, str, str]]:
        """``(round, client_id, phase, reason)`` of every recorded failure."""
        rows = self._db.execute("SELECT round, client_id, phase, reason FROM failures ORDER BY round, client_id")
        return [(int(r), int(c), str(p), str(m)) for r, c, p, m in rows]

    # Writing -----------------------------------------------------------------------
    def _write_round_arrays(self, round: int, params: Params, state: object) -> None:
        rows = []
        for idx, (name, array) in enumerate(params.items()):
            dtype, shape, data = array_to_record(array)
            rows.append((round, "params", idx, name, dtype, json.dumps(shape), data))
        structure, arrays = encode_tree(state)
        for idx, array in enumerate(arrays):
            dtype, shape, data = array_to_record(array)
            rows.append((round, "strategy", idx, "", dtype, json.dumps(shape), data))
        self._db.executemany("INSERT OR REPLACE INTO tensors VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
        self._db.execute("INSERT OR REPLACE INTO states VALUES (?, 'strategy', ?)", (round, structure))

    def commit_round(
        self,
        record: RoundRecord,
        params: Params,
        state: object,
        clients: Iterable[ClientRecord] = (),
        failures: Sequence[tuple[str, ClientFailure]] = (),
        keep_params: int = 0,
        client_states: Mapping[int, TensorGroups] | None = None,
        meta: Mapping[str, Any] | None = None,
        traffic: Mapping[int, tuple[int, int]] | None = None,
    ) -> None:
        """Write one finished round atomically.

        Args:
            record: the round's record.
            params: the global params after the round.
            state: the strategy state after the round.
            clients: per-client metrics of the round; a client may have several records
                of one phase (stored as entries 0, 1, ... in this order).
            failures: ``(phase, failure)`` for every client that dropped out.
            keep_params: if > 0, delete params and state older than this many rounds
                (round 0, the initial model, is always kept).
            client_states: new persistent states of clients, replacing their old ones.
            meta: meta entries to set in the same transaction (e.g. what an asynchronous
                run must know to resume after this round).
            traffic: ``client -> (download, upload)`` bytes of the round's training.

        Raises:
            StoreError: if the round is not the next one.
        """
        expected = self.last_round + 1
        if record.round != expected:
            raise StoreError(f"cannot commit round {record.round}: the store's next round is {expected}")
        with self._transaction():
            self._db.execute(
                "INSERT INTO rounds VALUES (?, ?, ?)", (record.round, time.time(), json.dumps(record.to_dict()))
            )
            entries: Counter[tuple[int, str]] = Counter()
            rows = []
            for c in clients:
                entry = entries[c.client_id, c.phase]
                entries[c.client_id, c.phase] += 1
                rows.append((record.round, c.client_id, c.phase, c.num_examples, json.dumps(dict(c.metrics)), entry))
            self._db.executemany(
                "INSERT INTO client_metrics (round, client_id, phase, num_examples, metrics, entry) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                rows,
            )
            self._db.executemany(
                "INSERT INTO failures VALUES (?, ?, ?, ?)",
                [(record.round, f.client_id, phase, f.reason) for phase, f in failures],
            )
            self._db.executemany(
                "INSERT OR REPLACE INTO client_traffic VALUES (?, ?, ?, ?)",
                [(record.round, c, down, up) for c, (down, up) in (traffic or {}).items()],
            )
            self._write_round_arrays(record.round, params, state)
            for client_id, client_state in (client_states or {}).items():
                self._write_client_state(record.round, client_id, client_state)
            if keep_params > 0:
                cutoff = record.round - keep_params
                self._db.execute("DELETE FROM tensors WHERE round > 0 AND round <= ?", (cutoff,))
                self._db.execute("DELETE FROM states WHERE round > 0 AND round <= ?", (cutoff,))
            for key, value in (meta or {}).items():
                self._db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, json.dumps(value)))

    def _write_client_state(self, round: int, client_id: int, state: TensorGroups) -> None:
        structure, arrays = encode_tree(dict(state))
        self._db.execute("INSERT OR REPLACE INTO client_states VALUES (?, ?, ?)", (client_id, round, structure))
        self._db.execute("DELETE FROM client_tensors WHERE client_id = ?", (client_id,))
        rows = []
        for idx, array in enumerate(arrays):
            dtype, shape, data = array_to_record(array)
            rows.append((client_id, idx, dtype, json.dumps(shape), data))
        self._db.executemany("INSERT INTO client_tensors VALUES (?, ?, ?, ?, ?)", rows)

    def set_meta(self, key: str, value: Any) -> None:
        """Set one meta entry (e.g. ``status``) in its own transaction."""
        with self._transaction():
            self._db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, json.dumps(value)))


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT, rolled back on any exception."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self._db.execute("COMMIT")
        else:
            self._db.execute("ROLLBACK")
