from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sheaf.cli.app import app
from tests.conftest import SMALL

runner = CliRunner()


def sets(*overrides: str) -> list[str]:
    return [arg for item in overrides for arg in ("--set", item)]


def test_simulate_json_prints_one_object_with_the_promised_figures(runs_dir: str) -> None:
    result = runner.invoke(app, ["simulate", "--json", *sets(*SMALL, runs_dir)])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["rounds"] == 3
    for key in ("central_accuracy", "central_loss", "wall_seconds", "run_path"):
        assert key in summary
    assert set(summary["federated_accuracy"]) >= {"mean", "std", "min", "p10", "jain"}
    assert Path(summary["run_path"]).is_file()


def test_simulate_shows_tables_and_how_to_report(runs_dir: str) -> None:
    result = runner.invoke(app, ["simulate", "--quiet", *sets(*SMALL, runs_dir)])
    assert result.exit_code == 0, result.output
    assert "central accuracy" in result.stdout
    assert "sheaf report" in result.stdout


def test_the_progress_header_says_which_backend_auto_chose_and_why(runs_dir: str) -> None:
    result = runner.invoke(app, ["simulate", *sets(*SMALL, runs_dir)])
    assert result.exit_code == 0, result.output
    header = " ".join(result.stderr.split())  # the console wraps long lines
    assert "backend vectorized" in header
    assert "auto chose vectorized: a TorchTask with the standard loop and a small model" in header


def test_simulate_reads_a_toml_file(tmp_path: Path, runs_dir: str) -> None:
    path = tmp_path / "run.toml"
    path.write_text('rounds = 2\n[data]\nclients = 4\npartition = "iid"\n[strategy]\nfraction = 1.0\n')
    result = runner.invoke(app, ["simulate", str(path), "--json", *sets(runs_dir)])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["rounds"] == 2


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["dataset=mnist"],
            "error: unknown dataset 'mnist'; choose one of: chem97, digits, fashion_mnist, heart, shakespeare",
        ),
        (["strategy=fedsgd"], "error: unknown strategy 'fedsgd'; choose one of: bulyan, ditto, fedadagrad, fedadam"),
        (["data.clinets=5"], "error: unknown config key 'data.clinets'; did you mean 'clients'?"),
        (["alpha=0"], "error: data.alpha must be > 0 for Dirichlet partitioning, got 0.0"),
        (["alpha=-1"], "error: data.alpha must be > 0 for Dirichlet partitioning, got -1.0"),
        (
            ["clients=5000", "partition=iid"],
            "error: cannot give 5000 clients at least 1 sample(s) each from 1438 samples",
        ),
        (["fraction=0"], "error: strategy.fraction must be in (0, 1], got 0.0"),
        (["fraction=1.5"], "error: strategy.fraction must be in (0, 1], got 1.5"),
        (["backend=gpu"], "error: unknown backend 'gpu'; choose one of: auto, inline, pool, ray, vectorized"),
        (
            ["model=resnet"],
            "error: unknown model 'resnet'; choose one of: mlp, logreg, cnn, cnn_wide, char_lstm, leaf_lstm",
        ),
        (["strategy.momentum=0.9"], "error: unknown setting strategy.momentum for 'fedavg'"),
    ],
)
def test_bad_input_is_one_clear_line_and_exit_status_2(overrides: list[str], message: str, runs_dir: str) -> None:
    result = runner.invoke(app, ["simulate", "--json", *sets(*overrides, runs_dir)])
    assert result.exit_code == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(message)


def test_a_missing_config_file_is_exit_2(tmp_path: Path) -> None:
    result = runner.invoke(app, ["simulate", str(tmp_path / "missing.toml")])
    assert result.exit_code == 2
    assert "not found" in result.stderr


def test_report_writes_the_files_and_lists_them(runs_dir: str, tmp_path: Path) -> None:
    summary = json.loads(runner.invoke(app, ["simulate", "--json", *sets(*SMALL, runs_dir)]).stdout)
    result = runner.invoke(app, ["report", summary["run_path"], "--out", str(tmp_path / "rep")])
    assert result.exit_code == 0, result.output
    assert [Path(line).name for line in result.stdout.split()] == [
        "accuracy.png",
        "loss.png",
        "clients.png",
        "report.html",
    ]


def test_report_of_a_missing_run_is_exit_2(tmp_path: Path) -> None:
    result = runner.invoke(app, ["report", str(tmp_path / "nope.sqlite")])
    assert result.exit_code == 2
    assert "not found" in result.stderr


def test_datasets_lists_the_bundled_data() -> None:
    result = runner.invoke(app, ["datasets"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    assert "digits" in result.stdout
    assert "heart" in result.stdout
    assert "hospital" in result.stdout


def test_partition_prints_one_row_per_client() -> None:
    result = runner.invoke(
        app, ["partition", *sets("dataset=heart", "partition=natural", "clients=4")], env={"COLUMNS": "200"}
    )
    assert result.exit_code == 0, result.output
    for hospital in ("Cleveland", "Hungary", "Switzerland", "VA Long Beach"):
        assert hospital in result.stdout


def test_config_prints_toml_that_loads_back(tmp_path: Path) -> None:
    result = runner.invoke(app, ["config", *sets("rounds=7", "hidden=[8, 4]")])
    assert result.exit_code == 0
    path = tmp_path / "dumped.toml"
    path.write_text(result.stdout)
    from sheaf.core.config import load_config

    assert load_config(path) == load_config(overrides=["rounds=7", "hidden=[8, 4]"])


@pytest.mark.e2e
def test_the_installed_sheaf_command_runs(tmp_path: Path) -> None:
    sheaf = Path(sys.executable).with_name("sheaf")
    command = [str(sheaf)] if sheaf.exists() else [sys.executable, "-m", "sheaf"]
    done = subprocess.run(
        [*command, "simulate", "--json", *sets(*SMALL)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "120"},
        check=False,
    )
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert (tmp_path / summary["run_path"]).is_file()
    assert summary["run_path"].startswith("runs/")


def test_simulate_json_gives_the_virtual_time_of_simulated_devices(runs_dir: str) -> None:
    result = runner.invoke(app, ["simulate", "--json", *sets(*SMALL, runs_dir, "devices.enabled=true")])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["virtual_hours"] > 0
    fedbuff = ["devices.enabled=true", "asynchronous.enabled=true", "concurrency=6", "buffer=3"]
    result = runner.invoke(app, ["simulate", "--json", *sets(*SMALL, runs_dir, *fedbuff)])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["asynchronous"]["buffer"] == 3
