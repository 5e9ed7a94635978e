"""The CLI side of the strategy library: listing, hyperparameters, attacks and personalisation."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from sheaf.cli.app import app
from sheaf.strategies.registry import available_strategies
from tests.conftest import SMALL

runner = CliRunner()


def sets(*overrides: str) -> list[str]:
    return [arg for item in overrides for arg in ("--set", item)]


def test_strategies_lists_every_strategy_with_its_hyperparameters() -> None:
    result = runner.invoke(app, ["strategies"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    for name in available_strategies():
        assert name in result.stdout
    assert "lr=0.03, beta1=0.9, beta2=0.99, tau=0.001" in result.stdout
    assert "weighted sum" in result.stdout and "each update" in result.stdout


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["strategy=fedadam", "strategy.lr=-1"], "error: strategy.lr must be > 0 for fedadam, got -1"),
        (["strategy=krum", "strategy.f=4"], "error: strategy 'krum': Krum with f=4 assumes n >= 2f + 3 = 11 updates"),
        (["strategy=trimmed_mean", "strategy.beta=0.7"], "error: strategy.beta must be > 0 and < 0.5 for trimmed_mean"),
        (["attack=poison"], "error: attack.name must be one of: none, sign_flip, scale, gaussian, label_flip"),
        (["finetune_steps=-1"], "error: personalization.finetune_steps must be >= 0, got -1"),
    ],
)
def test_bad_strategy_attack_and_personalisation_settings_are_one_line_and_exit_2(
    overrides: list[str], message: str, runs_dir: str
) -> None:
    result = runner.invoke(app, ["simulate", "--json", *sets(*overrides, runs_dir)])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(message)


def test_simulate_reports_personalised_accuracy_when_asked(runs_dir: str) -> None:
    result = runner.invoke(app, ["simulate", "--json", *sets(*SMALL, runs_dir, "finetune_steps=2", "strategy=fedadam")])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["strategy"] == "fedadam"
    assert set(summary["personalized_accuracy"]) >= {"mean", "p10", "std"}


def test_the_table_says_why_rounds_left_the_model_unchanged() -> None:
    from rich.console import Console

    from sheaf.cli._console import rounds_table
    from sheaf.evaluation.history import History, RoundRecord

    note = "Krum with f=1 assumes n >= 2f + 3 = 5 updates, but only 4 arrived; round skipped"
    history = History(
        [
            RoundRecord(1, 5, 0, 1, aggregated=False, central={"accuracy": 0.1}, note=note),
            RoundRecord(2, 5, 5, 0, central={"accuracy": 0.5}, federated={"personalized_accuracy": {"mean": 0.7}}),
        ]
    )
    console = Console(width=250, record=True)
    console.print(rounds_table(history))
    text = " ".join(console.export_text().split())  # the caption wraps at the table's width
    assert "1 round(s) left the model unchanged: " + note in text
    assert "pers: personalised accuracy (mean, worst 10%)" in text
