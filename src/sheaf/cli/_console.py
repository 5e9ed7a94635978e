"""What the CLI shows: a live progress bar per round, and the final tables.

The progress bar goes to standard error, so ``sheaf simulate --json > out.json`` keeps
standard output machine-readable.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd
from rich import box
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from sheaf.core.config import RunConfig
from sheaf.data.dataset import Federation
from sheaf.evaluation.divergence import divergence
from sheaf.evaluation.history import History, RoundRecord
from sheaf.evaluation.traffic import format_bytes
from sheaf.privacy.plan import EVALUATION_OFF

__all__ = [
    "ProgressListener",
    "StoreListener",
    "add_columns",
    "interrupted_message",
    "narrow_table",
    "partition_table",
    "results_table",
    "rounds_table",
]


def _num(value: Any, digits: int = 4) -> str:
    if isinstance(value, int | float) and not (isinstance(value, float) and math.isnan(value)):
        return f"{value:.{digits}f}" if isinstance(value, float) else str(value)
    return "-"


def _epsilon(privacy: Mapping[str, float]) -> str:
    """`` ε 1.23 (δ 1e-05)`` for the progress bar; empty without differential privacy."""
    if "epsilon" not in privacy:
        return ""
    return f" [magenta]ε {_num(privacy['epsilon'], 3)}[/] (δ {privacy.get('delta', math.nan):.0e})"


def _virtual(seconds: float) -> str:
    """`` virtual 1.25 h`` for the progress bar: simulated devices' time; empty without them.

    Example:
        >>> _virtual(4500.0), _virtual(0.0)
        (' [green]virtual 1.25 h[/]', '')
    """
    return f" [green]virtual {seconds / 3600:.2f} h[/]" if seconds > 0 else ""


class StoreListener:
    """Remembers where the run is stored and how far it got (for the message after Ctrl-C)."""

    def __init__(self) -> None:
        self.store: Path | None = None
        self.rounds_done = 0

    def on_store(self, path: Path) -> None:
        """Where the run is stored."""
        self.store = path

    def on_start(self, config: RunConfig, first_round: int, cohort: int, population: int) -> None:
        """The run starts (or resumes) at ``first_round``."""
        self.rounds_done = first_round - 1

    def on_round(self, record: RoundRecord) -> None:
        """A round was committed."""
        self.rounds_done = record.round

    def stop(self) -> None:
        """Nothing to stop."""


def interrupted_message(config: RunConfig, store: Path | None, rounds_done: int) -> str:
    """What Ctrl-C says: where the rounds are, and how to go on — only a named run resumes.

    Example:
        >>> from sheaf.core.config import load_config
        >>> print(interrupted_message(load_config(overrides=["name=mine"]), Path("runs/mine.sqlite"), 12))
        interrupted after round 12; the rounds so far are saved in runs/mine.sqlite; run the same command again to resume run 'mine' at round 13
    """
    where = f"the rounds so far are saved in {store}" if store is not None else "nothing was saved"
    if config.name:
        return f"interrupted after round {rounds_done}; {where}; run the same command again to resume run {config.name!r} at round {rounds_done + 1}"
    return (
        f"interrupted after round {rounds_done}; {where}; an unnamed run cannot be resumed: "
        "give a run a name (--set name=...) to be able to resume it"
    )


class ProgressListener(StoreListener):
    """A rich progress bar that shows the round and the live central accuracy."""

    def __init__(self, console: Console) -> None:
        super().__init__()
        self.console = console
        self._records: list[RoundRecord] = []
        self._warned = False
        self._progress = Progress(
            TextColumn("[bold]round"),
            MofNCompleteColumn(),
            BarColumn(),
            TextColumn(
                "acc [cyan]{task.fields[acc]}[/] loss {task.fields[loss]} clients {task.fields[clients]}"
                "{task.fields[eps]}{task.fields[vt]}"
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
        """Start the bar; a resumed run starts part-way; a finished one says so and shows its results."""
        super().on_start(config, first_round, cohort, population)
        if first_round > config.rounds:
            self.console.print(
                f"[bold]sheaf[/] run {config.name!r} already finished its {config.rounds} rounds; showing its results "
                f"(to run it again, choose another name or delete {self.store or 'its run store'})",
                highlight=False,
            )
            return
        self.console.print(
            f"[bold]sheaf[/] {config.data.dataset} · {population} clients ({config.data.partition}) · "
            f"{config.strategy.name} · {cohort} per round · backend {self._backend or config.backend}"
            + (f" · {config.privacy.mode} DP" if config.privacy.mode != "none" else "")
            + (" · secure aggregation" if config.secagg.enabled else "")
            + (" · distributed DP" if config.secagg.enabled and config.secagg.dp == "distributed" else "")
            + (" · simulated devices" if config.devices.enabled else "")
            + (
                f" · FedBuff (C={config.asynchronous.concurrency}, K={config.asynchronous.buffer}): rounds are server steps"
                if config.asynchronous.enabled
                else ""
            )
            + (f" · {config.compression.encoder} updates" if config.compression.encoder != "none" else "")
            + (f" · {config.compression.download} downloads" if config.compression.download != "none" else "")
            + (f" · resuming at round {first_round}" if first_round > 1 else "")
        )
        if self._reason:
            chose = self._backend if config.backend == self._backend else f"{config.backend} chose {self._backend}"
            self.console.print(f"[dim]{chose}: {self._reason}[/]", highlight=False)
        if config.privacy.mode != "none" and config.evaluation.federated == "auto":
            self.console.print(f"[dim]{EVALUATION_OFF}[/]", highlight=False)
        self._progress.start()
        self._task = self._progress.add_task(
            "rounds", total=config.rounds, completed=first_round - 1, acc="-", loss="-", clients="-", eps="", vt=""
        )

    def on_round(self, record: RoundRecord) -> None:
        """Advance the bar with the round's figures (the last central ones between central
        evaluations); warn once if the run diverges."""
        super().on_round(record)
        self._records.append(record)
        central = record.central or record.monitor  # between the ends of a monitored run: its subset
        figures: dict[str, Any] = {
            "clients": f"{record.completed}/{record.sampled}",
            "eps": _epsilon(record.privacy),
            "vt": _virtual(record.virtual_seconds),
        }
        if central:
            figures.update(acc=_num(central.get("accuracy")), loss=_num(central.get("loss")))
        self._progress.update(self._task, completed=record.round, **figures)
        warning = None if self._warned else divergence(self._records)
        if warning is not None:
            self._warned = True
            self._progress.console.print(f"[bold yellow]warning:[/] {warning}", highlight=False)

    def stop(self) -> None:
        """Stop the bar (idempotent)."""
        if self._task is not None:
            self._progress.stop()


def narrow_table(title: str = "", **kwargs: Any) -> Table:
    """A table that stays readable at 80 columns: light rules, one space between columns, and
    (with :func:`add_columns`) cells that wrap — never cut off with an ellipsis."""
    return Table(
        title=title or None, box=box.SIMPLE_HEAD, pad_edge=False, padding=(0, 1, 0, 0), caption_justify="left", **kwargs
    )


def add_columns(table: Table, *names: str, right: bool = True, first_left: bool = True) -> None:
    """Add columns whose cells fold rather than being cut; numbers right-aligned."""
    for i, name in enumerate(names):
        left = (i == 0 and first_left) or not right
        table.add_column(name, justify="left" if left else "right", overflow="fold")


def rounds_table(history: History) -> Table:
    """One row per round with a federated evaluation (and the last round), in 80 columns."""
    table = narrow_table("Rounds with federated evaluation")
    personal = any("personalized_accuracy" in r.federated for r in history)
    private = any(r.privacy for r in history)
    columns = ["round", "acc", "loss", "mean", "p10", "min", "jain", "ok/fail"]
    if personal:
        columns += ["pers", "pers p10"]
    if private:
        columns.append("ε spent")
    add_columns(table, *columns)
    digits = 3 if (personal or private) else 4  # so that every column fits in 80 unbroken
    last = history.rounds_completed
    skipped = sum(1 for r in history if not r.aggregated)
    monitored = False
    rows: list[list[str]] = []
    for r in history:
        if not r.federated and r.round != last:
            continue
        acc = r.federated.get("accuracy", {})
        central = r.central
        mark = ""
        if not central and r.monitor:
            central, mark, monitored = r.monitor, "*", True
        cells = [
            str(r.round),
            _num(central.get("accuracy"), digits) + mark,
            _num(central.get("loss"), digits) + mark,
            _num(acc.get("mean"), digits),
            _num(acc.get("p10"), digits),
            _num(acc.get("min"), digits),
            _num(acc.get("jain"), digits),
            f"{r.completed}/{r.failed}",
        ]
        if personal:
            tuned = r.federated.get("personalized_accuracy", {})
            cells += [_num(tuned.get("mean"), digits), _num(tuned.get("p10"), digits)]
        if private:
            epsilon = r.privacy.get("epsilon")
            cells.append("-" if epsilon is None else f"{epsilon:.3g}")
        rows.append(cells)
    for i, column in enumerate(table.columns):  # numbers never break: headers wrap instead
        column.min_width = max((len(row[i]) for row in rows), default=1)
    for cells in rows:
        table.add_row(*cells)
    notes = [
        "acc, loss: central test set; mean, p10 (worst 10%), min, jain: clients' accuracy; "
        "ok/fail: updates aggregated / clients failed"
    ]
    if personal:
        notes.append("pers: personalised accuracy (mean, worst 10%)")
    if private:
        notes.append("ε spent: the privacy spent so far")
    if monitored:
        notes.append("*: on the monitoring subset (evaluation.monitor), not the whole test set")
    if skipped:
        reasons = sorted({r.note for r in history if r.note})
        notes.append(f"{skipped} round(s) left the model unchanged: " + "; ".join(reasons[:3]))
    table.caption = "\n".join(notes)
    return table


def results_table(summary: Mapping[str, Any]) -> Table:
    """The final figures of a run."""
    table = narrow_table("Result", show_header=False)
    table.add_column("figure", overflow="fold")
    table.add_column("value", justify="right", overflow="fold")
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
    if "virtual_hours" in summary:
        table.add_row("virtual time", f"{summary['virtual_hours']:.2f} h (simulated devices)")
    if "upload_bytes" in summary:
        table.add_row(
            "training traffic: sent · received",
            f"{format_bytes(summary['download_bytes'])} · {format_bytes(summary['upload_bytes'])}",
        )
    table.add_row("wall time", f"{summary['wall_seconds']:.1f} s")
    table.add_row("run store", str(summary["run_path"]))
    return table


def partition_table(federation: Federation, summary: pd.DataFrame, limit: int) -> Table:
    """The partition summary as a table (the first ``limit`` clients): its labels in one
    folding column, so that it stays readable at 80 columns whatever the number of classes."""
    table = narrow_table(
        f"{federation.info.name}: {federation.num_clients} clients, central test {len(federation.central_test)}"
    )
    add_columns(table, "client", "name", "train", "test", "classes")
    table.columns[1].justify = "left"
    table.add_column("labels (class: rows)", overflow="fold")
    label_columns = [c for c in summary.columns if str(c).startswith("y=")]
    for row in summary.head(limit).to_dict("records"):
        labels = " · ".join(f"{str(c)[2:]}: {row[c]}" for c in label_columns if row[c])
        table.add_row(
            str(row["client"]), str(row["name"]), str(row["train"]), str(row["test"]), str(row["classes"]), labels
        )
    if len(summary) > limit:
        table.caption = f"{len(summary) - limit} more clients (--limit)"
    return table
