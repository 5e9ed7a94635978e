"""The dashboard's JSON views, without a browser: names come only from the folder's listing,
store strings travel as data, and a run half-written by another process is not an error."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("starlette", reason="the dashboard's extra is not installed: pip install 'sheaf[ui]'")

from sheaf.core.config import RunConfig
from sheaf.core.params import Params
from sheaf.evaluation.history import ClientRecord, RoundRecord
from sheaf.run.simulate import simulate
from sheaf.run.store import RunStore
from sheaf.ui.views import RunsView, UnknownRun
from tests.ui.tasks import HOSTILE_METRIC, HOSTILE_REASON, CountingTask


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    runs = tmp_path_factory.mktemp("runs")
    (runs / "sub").mkdir()
    overrides = ["rounds=3", "clients=4", "partition=iid", "fraction=1", "backend=inline"]
    simulate(overrides=[*overrides, f"runs_dir={runs}", "name=hostile"], task=CountingTask(failing=2, hostile=True))
    simulate(overrides=[*overrides, f"runs_dir={runs / 'sub'}", "name=inner"], task=CountingTask())
    (runs / "not-a-run.sqlite").write_bytes(b"this is not a database")
    return runs


def test_the_runs_table_lists_runs_in_subfolders_and_says_why_a_file_is_unreadable(folder: Path) -> None:
    rows = {r["name"]: r for r in RunsView(folder).runs()}

    assert set(rows) == {"hostile", "sub/inner", "not-a-run"}
    assert rows["sub/inner"]["status"] == "finished" and rows["sub/inner"]["rounds_done"] == 3
    assert "not a sheaf run store" in rows["not-a-run"]["error"]


@pytest.mark.parametrize("name", ["../hostile", "/etc/passwd", "hostile.sqlite", "sub/../hostile", ""])
def test_only_names_from_the_folders_listing_are_opened(folder: Path, name: str) -> None:
    with pytest.raises(UnknownRun):
        RunsView(folder).run(name)


def test_store_strings_are_sent_as_plain_data(folder: Path) -> None:
    detail = RunsView(folder).run("hostile")

    assert detail["dropout_reasons"][0]["reason"].endswith(HOSTILE_REASON)
    assert HOSTILE_METRIC in detail["rounds"][-1]["central"]
    assert HOSTILE_METRIC in detail["clients"][0]["metrics"]
    assert json.loads(json.dumps(detail, allow_nan=False)) == detail  # strict JSON, nothing else


def test_only_new_rounds_are_sent_and_the_client_table_only_when_it_changed(folder: Path) -> None:
    view = RunsView(folder)
    first = view.run("hostile")

    later = view.run("hostile", since=2, clients_round=first["clients_round"])

    assert [r["round"] for r in later["rounds"]] == [3]
    assert "clients" not in later


def test_a_client_with_two_updates_in_a_step_trained_on_both(tmp_path: Path) -> None:
    # FedBuff: one client's two updates in one step's buffer; the client table adds them up.
    twice = [ClientRecord(1, "fit", 10, {"staleness": 1.0}), ClientRecord(1, "fit", 12, {"staleness": 0.0})]
    initial = Params({"w": np.zeros(2)})
    with RunStore.create(tmp_path / "fedbuff.sqlite", RunConfig().to_dict(), initial, ()) as store:
        store.commit_round(RoundRecord(1, 2, 2), initial, (), [*twice, ClientRecord(2, "fit", 5, {})])

    rows = {row["id"]: row for row in RunsView(tmp_path).run("fedbuff")["clients"]}

    assert rows[1]["trained_on"] == 22 and rows[2]["trained_on"] == 5
