"""The commands about runs already recorded: ``sheaf runs``, ``sheaf export``, ``sheaf ui``.

Registered on the shared app (:mod:`sheaf.cli._common`) when :mod:`sheaf.cli.app` imports
this module. They only read run stores (read-only, beside running writers).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from sheaf.cli._common import EXIT_BAD_INPUT, app, clear_errors

__all__: list[str] = []

RunsDir = Annotated[Path, typer.Argument(help="The folder of run stores (default runs/).")]


def _num(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _wall(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 90:
        return f"{seconds:.1f}s"
    if seconds < 5400:
        return f"{seconds / 60:.1f}m"
    return f"{seconds / 3600:.1f}h"


@app.command("runs")
def runs(
    folder: RunsDir = Path("runs"),
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON list, one object per run.")] = False,
) -> None:
    """List the runs in a folder: one line each, newest first (status: finished, running or interrupted)."""
    from sheaf.run.export import finite
    from sheaf.run.listing import list_runs

    with clear_errors():
        found = list_runs(folder)
    if as_json:
        typer.echo(json.dumps([finite(r.to_dict()) for r in found]))
        return
    table = Table(title=f"{len(found)} run(s) in {folder}", box=None, pad_edge=False, padding=(0, 1))
    table.add_column("run", overflow="fold", ratio=1, min_width=12)
    table.add_column("dataset · strategy", overflow="fold")
    for col in ("rounds", "status", "acc", "p10", "ε", "wall"):
        table.add_column(col, justify="right" if col != "status" else "left", no_wrap=True)
    for run in found:
        if run.error:
            table.add_row(run.name, run.error, "", "unreadable", "", "", "", "")
            continue
        table.add_row(
            run.name,
            f"{run.dataset} · {run.strategy}",
            f"{run.rounds_done}/{run.rounds_planned}",
            run.state.value,
            _num(run.central_accuracy, 3),
            _num(run.worst10, 3),
            _num(run.epsilon, 2),
            _wall(run.wall_seconds),
        )
    table.caption = "acc: central accuracy · p10: clients' worst 10% · ε: privacy spent"
    Console().print(table)


@app.command("export")
def export(
    run: Annotated[Path, typer.Argument(help="The run's .sqlite store.")],
    format: Annotated[str, typer.Option("--format", "-f", help="csv, json or tensorboard.")] = "csv",
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Output folder; default runs/<run>-export beside the store.")
    ] = None,
) -> None:
    """Write a run's per-round and per-client records as CSV, JSON or TensorBoard event files."""
    from sheaf.run.export import export_run

    with clear_errors():
        folder = out if out is not None else run.with_name(run.stem + "-export")
        paths = export_run(run, folder, format)
    for path in paths:
        typer.echo(str(path))


@app.command("ui")
def ui(
    folder: RunsDir = Path("runs"),
    host: Annotated[str, typer.Option(help="Address to bind; anything but loopback needs --token.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on (0: any free port).")] = 8050,
    token: Annotated[
        str,
        typer.Option(
            help="Access token every request must carry (env SHEAF_UI_TOKEN); required off loopback.",
            show_default=False,
        ),
    ] = "",
    refresh: Annotated[float, typer.Option(help="Seconds between the page's requests for news.")] = 1.0,
) -> None:
    """Serve a live dashboard of the runs in a folder (simulations and 'sheaf server' runs)."""
    try:
        from sheaf.ui.server import Dashboard, dashboard_url
    except ImportError as exc:
        typer.echo(
            f"error: the dashboard needs the 'ui' extra ({exc.name} is missing): pip install 'sheaf[ui]'", err=True
        )
        raise typer.Exit(EXIT_BAD_INPUT) from None

    token = token or os.environ.get("SHEAF_UI_TOKEN", "")
    with clear_errors():
        board = Dashboard(folder, host=host, port=port, token=token, refresh=refresh).start(timeout=30)
    typer.echo(f"sheaf dashboard of {folder}: {dashboard_url(host, board.port, token)}  (Ctrl-C stops it)", err=True)
    try:
        board.wait()
    except KeyboardInterrupt:
        pass
    finally:
        board.stop()
