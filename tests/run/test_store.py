from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pytest

from sheaf.core.errors import ClientFailure, StoreError
from sheaf.core.params import Params
from sheaf.evaluation.history import ClientRecord, RoundRecord
from sheaf.run.store import RunStore


def params(value: float) -> Params:
    return Params({"w": np.full((2, 2), value, np.float32), "b": np.full(2, value, np.float64)})


def test_rounds_are_committed_whole_and_read_back(tmp_path: Path) -> None:
    path = tmp_path / "run.sqlite"
    with RunStore.create(path, {"seed": 1}, params(0.0), state=((),), meta={"dataset": "digits"}) as store:
        for r in (1, 2):
            store.commit_round(
                RoundRecord(r, 3, 2, failed=1, central={"accuracy": r / 10}),
                params(float(r)),
                ((),),
                [ClientRecord(5, "fit", 10, {"train_loss": 0.5})],
                [("fit", ClientFailure(7, "timed out"))],
            )
    with RunStore.open(path, readonly=True) as store:
        assert store.config == {"seed": 1}
        assert store.meta["dataset"] == "digits"
        assert store.last_round == 2
        assert [r.central["accuracy"] for r in store.history()] == [0.1, 0.2]
        assert store.params().array_equal(params(2.0))
        assert store.params(0).array_equal(params(0.0))
        assert store.client_records(round=1) == [(1, ClientRecord(5, "fit", 10, {"train_loss": 0.5}))]
        assert store.failures() == [(1, 7, "fit", "timed out"), (2, 7, "fit", "timed out")]


def test_a_round_can_only_follow_the_last_one(tmp_path: Path) -> None:
    with RunStore.create(tmp_path / "r.sqlite", {}, params(0.0), ()) as store:
        with pytest.raises(StoreError, match="cannot commit round 2: the store's next round is 1"):
            store.commit_round(RoundRecord(2, 1, 1), params(1.0), ())


def test_a_failed_commit_leaves_no_partial_round(tmp_path: Path) -> None:
    with RunStore.create(tmp_path / "r.sqlite", {}, params(0.0), ()) as store:
        with pytest.raises(Exception, match="cannot store state"):
            store.commit_round(RoundRecord(1, 1, 1), params(1.0), {"bad": object()})
        assert store.last_round == 0
        assert len(store.history()) == 0
        store.commit_round(RoundRecord(1, 1, 1), params(1.0), ())
        assert store.last_round == 1


def test_keep_params_prunes_old_rounds_but_keeps_the_initial_model(tmp_path: Path) -> None:
    with RunStore.create(tmp_path / "r.sqlite", {}, params(0.0), ()) as store:
        for r in range(1, 6):
            store.commit_round(RoundRecord(r, 1, 1), params(float(r)), (), keep_params=2)
        assert store.params(0).array_equal(params(0.0))
        assert store.params(5).array_equal(params(5.0))
        assert store.params(4).array_equal(params(4.0))
        with pytest.raises(StoreError, match="holds no params for round 3"):
            store.params(3)
        assert len(store.history()) == 5


def test_creating_over_an_existing_run_is_refused(tmp_path: Path) -> None:
    RunStore.create(tmp_path / "r.sqlite", {}, params(0.0), ()).close()
    with pytest.raises(StoreError, match="already exists"):
        RunStore.create(tmp_path / "r.sqlite", {}, params(0.0), ())


def test_missing_foreign_and_corrupt_files_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="not found"):
        RunStore.open(tmp_path / "none.sqlite")
    text = tmp_path / "notes.sqlite"
    text.write_text("hello, not a database" * 100)
    with pytest.raises(StoreError, match="not a sheaf run store"):
        RunStore.open(text)
    other = tmp_path / "other.sqlite"
    sqlite3.connect(other).execute("CREATE TABLE t (x)").connection.close()
    with pytest.raises(StoreError, match="not a sheaf run store"):
        RunStore.open(other)


def test_the_store_is_in_wal_mode(tmp_path: Path) -> None:
    RunStore.create(tmp_path / "r.sqlite", {}, params(0.0), ()).close()
    mode = sqlite3.connect(tmp_path / "r.sqlite").execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


def _create(path: Path) -> RunStore:
    from sheaf.core.config import RunConfig
    from sheaf.run.assemble import open_or_create_store

    return open_or_create_store(path, RunConfig(), params(0.0), (), {"dataset": "digits"})


def test_a_creation_that_fails_midway_leaves_nothing_the_same_command_refuses(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "runs" / "run.sqlite"

    def interrupted(*args: object) -> None:
        raise KeyboardInterrupt  # Ctrl-C while round 0 is written

    with monkeypatch.context() as patched:
        patched.setattr(RunStore, "_write_round_arrays", interrupted)
        with pytest.raises(KeyboardInterrupt):
            _create(path)
    assert list(path.parent.iterdir()) == []

    with _create(path) as store:
        assert store.last_round == 0 and store.params().array_equal(params(0.0))


def test_a_process_killed_while_creating_the_store_leaves_nothing_the_same_command_refuses(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    path = tmp_path / "run.sqlite"
    script = f"""
import os
from pathlib import Path
from sheaf.run.store import RunStore
from tests.run.test_store import _create

def killed(store, *args):
    store._db.execute("INSERT INTO meta VALUES ('half', '1')")  # some of the transaction is written
    os._exit(9)  # as kill -9 would: no cleanup at all

RunStore._write_round_arrays = killed
_create(Path({str(path)!r}))
"""
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
    assert subprocess.run([sys.executable, "-c", script], env=env, check=False).returncode == 9
    assert not path.exists() and [p.name for p in tmp_path.iterdir() if p.name.endswith(".creating")]

    with _create(path) as store:
        assert store.last_round == 0
    assert [p.name for p in tmp_path.iterdir()] == ["run.sqlite"]  # the dead process's leftovers are gone


def test_a_file_that_holds_nothing_is_replaced_and_any_other_is_refused(tmp_path: Path) -> None:
    empty, tableless, foreign = tmp_path / "empty.sqlite", tmp_path / "tableless.sqlite", tmp_path / "foreign.sqlite"
    empty.write_bytes(b"")
    db = sqlite3.connect(tableless)
    db.execute("PRAGMA journal_mode=WAL").fetchall()  # what an older sheaf killed at once could leave
    db.close()
    with sqlite3.connect(foreign) as db:
        db.execute("CREATE TABLE notes (text TEXT)")
    db.close()

    for path in (empty, tableless):
        with _create(path) as store:
            assert store.last_round == 0
    with pytest.raises(StoreError, match="not a sheaf run store"):
        _create(foreign)
    assert foreign.stat().st_size > 0


def test_a_client_with_two_records_of_one_round_and_phase_keeps_both_in_their_order(tmp_path: Path) -> None:
    # FedBuff: one client's two updates in one step's buffer (an older one, 1 step stale, first).
    twice = [ClientRecord(3, "fit", 10, {"staleness": 1.0}), ClientRecord(3, "fit", 12, {"staleness": 0.0})]
    with RunStore.create(tmp_path / "r.sqlite", {}, params(0.0), ()) as store:
        store.commit_round(RoundRecord(1, 2, 2), params(1.0), (), [ClientRecord(9, "fit", 5, {}), *twice])
        assert [rec for _, rec in store.client_records(round=1, phase="fit")] == [*twice, ClientRecord(9, "fit", 5, {})]


# The client_metrics table of format 1, as its stores hold it: one record per (round, client, phase).
_FORMAT_1_CLIENT_METRICS = """CREATE TABLE client_metrics (
    round INTEGER NOT NULL, client_id INTEGER NOT NULL, phase TEXT NOT NULL,
    num_examples INTEGER NOT NULL, metrics TEXT NOT NULL,
    PRIMARY KEY (round, client_id, phase))"""


def _format_1_store(path: Path) -> None:
    """A store as format 1 wrote it: one round, client 5's fit record."""
    with RunStore.create(path, {"seed": 1}, params(0.0), ()) as store:
        store.commit_round(RoundRecord(1, 1, 1), params(1.0), (), [ClientRecord(5, "fit", 10, {"train_loss": 0.5})])
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("DROP TABLE client_metrics")
    db.execute(_FORMAT_1_CLIENT_METRICS)
    db.execute("INSERT INTO client_metrics VALUES (1, 5, 'fit', 10, '{\"train_loss\": 0.5}')")
    db.execute("UPDATE meta SET value = '1' WHERE key = 'format_version'")
    db.close()


def test_a_format_1_store_is_read_as_it_is_and_converted_when_opened_to_write(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    _format_1_store(path)
    old = [(1, ClientRecord(5, "fit", 10, {"train_loss": 0.5}))]
    with RunStore.open(path, readonly=True) as store:
        assert store.meta["format_version"] == 1 and store.client_records() == old

    with RunStore.open(path) as store:  # a resumed run: converted, then a round with two records of one client
        assert store.meta["format_version"] == 2 and store.client_records() == old
        twice = [ClientRecord(5, "fit", 10, {"staleness": 1.0}), ClientRecord(5, "fit", 10, {"staleness": 0.0})]
        store.commit_round(RoundRecord(2, 2, 2), params(2.0), (), twice)

    with RunStore.open(path) as store:  # opened again: nothing more to convert
        assert store.client_records() == [*old, *((2, rec) for rec in twice)]
        assert store.params(1).array_equal(params(1.0)) and store.last_round == 2


def test_a_store_of_a_newer_format_is_refused_with_what_to_do(tmp_path: Path) -> None:
    path = tmp_path / "new.sqlite"
    RunStore.create(path, {}, params(0.0), ()).close()
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("UPDATE meta SET value = '3' WHERE key = 'format_version'")
    db.close()
    with pytest.raises(StoreError, match="format 3, newer than this sheaf reads .2.; open it with the sheaf"):
        RunStore.open(path, readonly=True)
