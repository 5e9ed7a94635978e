"""sheaf runs, sheaf export, and a task's own metrics everywhere the built-in ones go."""

from __future__ import annotations

import csv
import json
import struct
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sheaf.cli.app import app
from sheaf.run.export import export_run
from sheaf.run.simulate import SimulationResult, simulate
from sheaf.run.store import RunStore
from tests.ui.tasks import CountingTask


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> SimulationResult:
    folder = tmp_path_factory.mktemp("runs")
    overrides = [f"runs_dir={folder}", "name=counted", "rounds=4", "clients=5", "partition=iid", "fraction=1",
                 "backend=inline", "evaluation.interval=2"]  # fmt: skip
    return simulate(overrides=overrides, task=CountingTask(failing=3))


def test_a_tasks_logged_metrics_are_recorded_like_the_built_in_ones(run: SimulationResult) -> None:
    last = run.history[-1]

    assert last.central["f1"] == pytest.approx(last.central["accuracy"] / 2)  # the server's evaluation
    assert set(last.federated["f1"]) >= {"mean", "p10", "min", "max", "jain"}  # the clients' evaluations
    assert last.fit["grad_norm"] == pytest.approx((0.5 + 1.5 + 2.5 + 4.5) / 4)  # per round, weighted mean
    with RunStore.open(run.run_path, readonly=True) as store:
        fits = store.client_records(round=4, phase="fit")
    assert {c.client_id: c.metrics["grad_norm"] for _, c in fits} == {0: 0.5, 1: 1.5, 2: 2.5, 4: 4.5}


def test_csv_export_has_a_row_per_round_and_per_client_record_with_every_figure(
    run: SimulationResult, tmp_path: Path
) -> None:
    rounds_csv, clients_csv, dropouts_csv = export_run(run.run_path, tmp_path, "csv")

    rounds = list(csv.DictReader(rounds_csv.read_text().splitlines()))
    assert [int(r["round"]) for r in rounds] == [1, 2, 3, 4]
    assert float(rounds[-1]["central_f1"]) == pytest.approx(run.history[-1].central["f1"])
    assert float(rounds[-1]["federated_accuracy_p10"]) == pytest.approx(run.history[-1].federated["accuracy"]["p10"])
    assert float(rounds[-1]["fit_grad_norm"]) == pytest.approx(run.history[-1].fit["grad_norm"])
    clients = list(csv.DictReader(clients_csv.read_text().splitlines()))
    assert {r["phase"] for r in clients} == {"fit", "evaluate"} and "f1" in clients[0]
    dropouts = list(csv.DictReader(dropouts_csv.read_text().splitlines()))
    assert len(dropouts) == 4 and all(d["client"] == "3" and "ValueError" in d["reason"] for d in dropouts)


def test_json_export_is_one_strict_json_object(run: SimulationResult, tmp_path: Path) -> None:
    (path,) = export_run(run.run_path, tmp_path, "json")

    document = json.loads(path.read_text(), parse_constant=lambda name: pytest.fail(f"{name} in JSON"))
    assert document["config"]["rounds"] == 4
    assert [r["round"] for r in document["rounds"]] == [1, 2, 3, 4]
    assert len(document["dropouts"]) == 4 and document["clients"][0]["name"] == "0"


def _scalars(events: Path) -> dict[str, list[tuple[int, float]]]:
    """Read a TensorBoard event file: TFRecords (length, crc, payload, crc) of Event protos."""
    from tensorboardX.proto import event_pb2

    found: dict[str, list[tuple[int, float]]] = {}
    data = events.read_bytes()
    at = 0
    while at < len(data):
        (length,) = struct.unpack("<Q", data[at : at + 8])
        event = event_pb2.Event.FromString(data[at + 12 : at + 12 + length])
        at += 12 + length + 4
        for value in event.summary.value:
            found.setdefault(value.tag, []).append((event.step, value.simple_value))
    return found


def test_tensorboard_export_writes_each_figure_per_round(run: SimulationResult, tmp_path: Path) -> None:
    pytest.importorskip("tensorboardX", reason="pip install 'sheaf[tensorboard]'")

    (events,) = export_run(run.run_path, tmp_path, "tensorboard")

    scalars = _scalars(events)
    assert [step for step, _ in scalars["central/accuracy"]] == [1, 2, 3, 4]
    assert scalars["central/f1"][-1][1] == pytest.approx(run.history[-1].central["f1"], rel=1e-6)
    assert [step for step, _ in scalars["federated/accuracy/p10"]] == [2, 4]


def test_export_command_and_an_unknown_format(run: SimulationResult, tmp_path: Path) -> None:
    ok = CliRunner().invoke(app, ["export", str(run.run_path), "--format", "json", "--out", str(tmp_path)])
    bad = CliRunner().invoke(app, ["export", str(run.run_path), "--format", "xml"])

    assert ok.exit_code == 0 and ok.output.strip() == str(tmp_path / "run.json")
    assert bad.exit_code == 2 and "export format must be one of: csv, json, tensorboard" in bad.output


def test_runs_command_prints_one_line_per_run_at_80_columns(run: SimulationResult) -> None:
    result = CliRunner().invoke(app, ["runs", str(run.run_path.parent)], env={"COLUMNS": "80"})

    assert result.exit_code == 0
    assert max(len(line) for line in result.output.splitlines()) <= 80
    (line,) = [line for line in result.output.splitlines() if line.startswith("counted")]
    assert "4/4" in line and "finished" in line and f"{run.history.final_central['accuracy']:.3f}" in line
    listed = json.loads(CliRunner().invoke(app, ["runs", str(run.run_path.parent), "--json"]).output)
    assert [(r["name"], r["status"], r["rounds_done"]) for r in listed] == [("counted", "finished", 4)]
