"""What the CLI shows: a live progress bar per round, and the final tables.

The progress bar goes to standard error, so ``sheaf simulate --json > out.json`` keeps
standard output machine-readable.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from sheaf.core.config import RunConfig
from sheaf.data.dataset import Federation
from sheaf.evaluation.history import History, RoundRecord

__all__ = ["ProgressListener", "partition_table", "results_table", "rounds_table"]


def _num(value: Any, digits: int = 4) -> str:
    if isinstance(value, int | float) and not (isinstance(value, float) and math.isnan(value)):
        return f"{value:.{digits}f}" if isinstance(value, float) else str(value)
    return "-"


def _epsilon(privacy: Mapping[str, float]) -> str:
    """`` ε 1.23 (δ 1e-05)`` for the progress bar; empty without differential privacy."""
    if "epsilon" not in privacy:
        return ""
    return f" [magenta]ε {_num(privacy['epsilon'], 3)}[/] (δ {privacy.get('delta', math.nan):.0e})"


class ProgressListener:
    """A rich progress bar that shows the round and the live central accuracy."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self._progress = Progress(
            TextColumn("[bold]round"),
            MofNCompleteColumn(),
            BarColumn(),
            TextColumn(
                "acc [cyan]{task.fields[acc]}[/] loss {task.fields[loss]} clients {task.fields[clients]}"
                "{task.fields[eps]}"
            ),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=False,
        )
        self._task: Any = None
        self._backend = ""
        self._reason = ""

    def on_backend(self, name: str, reason: str) -> None:
        """Remember which backend runs the clients (``auto`` chooses one) and why."""
        self._backend = name
        self._reason = "" if reason == "as configured" else reason

    def on_start(self, config: RunConfig, first_round: int, cohort: int, population: int) -> None:
        """Start the bar; a resumed run starts part-way."""
        self.console.print(
            f"[bold]sheaf[/] {config.data.dataset} · {population} clients ({config.data.partition}) · "
            f"{config.strategy.name} · {cohort} per round · backend {self._backend or config.backend}"
            + (f" · {config.privacy.mode} DP" if config.privacy.mode != "none" else "")
            + (f" · resuming at round {first_round}" if first_round > 1 else "")
        )
        if self._reason:
            chose = self._backend if config.backend == self._backend else f"{config.backend} chose {self._backend}"
            self.console.print(f"[dim]{chose}: {self._reason}[/]", highlight=False)
        self._progress.start()
        self._task = self._progress.add_task(
            "rounds", total=config.rounds, completed=first_round - 1, acc="-", loss="-", clients="-", eps=""
        )

    def on_round(self, record: RoundRecord) -> None:
        """Advance the bar with the round's figures (the last central ones between central evaluations)."""
        figures: dict[str, Any] = {"clients": f"{record.completed}/{record.sampled}", "eps": _epsilon(record.privacy)}
        if record.central:
            figures.update(acc=_num(record.central.get("accuracy")), loss=_num(record.central.get("loss")))
        self._progress.update(self._task, completed=record.round, **figures)

    def stop(self) -> None:
        """Stop the bar (idempotent)."""
        self._progress.stop()


def rounds_table(history: History) -> Table:
    """One row per round with a federated evaluation (and the last round)."""
    table = Table(title="Rounds with federated evaluation")
    for col in (
        "round",
        "central acc",
        "central loss",
        "client acc mean",
        "worst 10%",
        "min",
        "jain",
        "updates",
        "failed",
    ):
        table.add_column(col, justify="right")
    personal = any("personalized_accuracy" in r.federated for r in history)
    if personal:
        table.add_column("personalised mean", justify="right")
        table.add_column("personalised worst 10%", justify="right")
    private = any(r.privacy for r in history)
    if private:
        table.add_column("ε spent", justify="right")
    last = history.rounds_completed
    skipped = sum(1 for r in history if not r.aggregated)
    for r in history:
        if not r.federated and r.round != last:
            continue
        acc = r.federated.get("accuracy", {})
        cells = [
            str(r.round),
            _num(r.central.get("accuracy")),
            _num(r.central.get("loss")),
            _num(acc.get("mean")),
            _num(acc.get("p10")),
            _num(acc.get("min")),
            _num(acc.get("jain")),
            str(r.completed),
            str(r.failed),
        ]
        if personal:
            tuned = r.federated.get("personalized_accuracy", {})
            cells += [_num(tuned.get("mean")), _num(tuned.get("p10"))]
        if private:
            cells.append(_num(r.privacy.get("epsilon"), 3))
        table.add_row(*cells)
    if skipped:
        reasons = sorted({r.note for r in history if r.note})
        table.caption = f"{skipped} round(s) left the model unchanged: " + "; ".join(reasons[:3])
    return table


def results_table(summary: Mapping[str, Any]) -> Table:
    """The final figures of a run."""
    table = Table(title="Result", show_header=False)
    table.add_column("figure")
    table.add_column("value", justify="right")
    table.add_row("rounds", str(summary["rounds"]))
    table.add_row("central accuracy", _num(summary["central_accuracy"]))
    table.add_row("central loss", _num(summary["central_loss"]))
    fed = summary.get("federated_accuracy") or {}
    for key, label in (
        ("mean", "mean"),
        ("weighted_mean", "weighted mean"),
        ("std", "std"),
        ("min", "worst client"),
        ("p10", "worst 10% mean"),
        ("max", "best client"),
        ("jain", "Jain's index"),
    ):
        if key in fed:
            table.add_row(f"client accuracy: {label}", _num(fed[key]))
    personal = summary.get("personalized_accuracy") or {}
    for key, label in (("mean", "mean"), ("p10", "worst 10% mean")):
        if key in personal:
            table.add_row(f"personalised accuracy: {label}", _num(personal[key]))
    if "epsilon" in summary:
        epsilon = summary["epsilon"]
        table.add_row(f"privacy spent: ε at δ = {summary['delta']:g}", "∞" if epsilon is None else _num(float(epsilon)))
        table.add_row(
            "noise multiplier · final clip norm", f"{summary['noise_multiplier']:.4g} · {summary['clip']:.4g}"
        )
    table.add_row("wall time", f"{summary['wall_seconds']:.1f} s")
    table.add_row("run store", str(summary["run_path"]))
    return table


def partition_table(federation: Federation, summary: pd.DataFrame, limit: int) -> Table:
    """The partition summary as a table (the first ``limit`` clients)."""
    table = Table(
        title=f"{federation.info.name}: {federation.num_clients} clients, central test {len(federation.central_test)}"
    )
    columns: Sequence[str] = list(summary.columns)
    for col in columns:
        table.add_column(str(col), justify="left" if col == "name" else "right")
    for row in summary.head(limit).itertuples(index=False):
        table.add_row(*[str(v) for v in row])
    return table
