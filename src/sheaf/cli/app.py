"""The ``sheaf`` command line: simulate, report, datasets, strategies, partition, config.

Every command turns a :class:`~sheaf.core.errors.SheafError` into one line on standard
error — ``error: <what was wrong and what to do>`` — and exit status 2.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from sheaf.core.config import RunConfig
from sheaf.core.errors import SheafError

__all__ = ["app"]

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="sheaf: federated learning — simulate, deploy, protect, judge.",
    pretty_exceptions_enable=False,
)

ConfigArg = Annotated[
    Path | None, typer.Argument(help="A TOML config file; omit for the quickstart defaults.", show_default=False)
]
SetOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        "-s",
        help="Override a setting, e.g. --set rounds=10 --set data.alpha=0.3 (run 'sheaf config' to list keys).",
        show_default=False,
    ),
]

EXIT_BAD_INPUT = 2


@contextmanager
def _clear_errors() -> Iterator[None]:
    try:
        yield
    except SheafError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(EXIT_BAD_INPUT) from None


def _config(path: Path | None, overrides: list[str] | None) -> RunConfig:
    from sheaf.core.config import load_config

    return load_config(path, overrides or [])


@app.command()
def simulate(
    config: ConfigArg = None,
    overrides: SetOpt = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print one JSON object with the results, nothing else.")
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Run a federated simulation (the quickstart with no arguments) and save it under runs/."""
    from sheaf.cli._console import ProgressListener, results_table, rounds_table
    from sheaf.run.simulate import simulate as run_simulation

    err = Console(stderr=True)
    listener = None if (as_json or quiet) else ProgressListener(err)
    with _clear_errors():
        cfg = _config(config, overrides)
        try:
            result = run_simulation(cfg, listener=listener)
        except KeyboardInterrupt:
            typer.echo(
                "interrupted; completed rounds are saved in the run store (set name=... to resume a named run)",
                err=True,
            )
            raise typer.Exit(130) from None
        finally:
            if listener is not None:
                listener.stop()
    summary = result.summary()
    if as_json:
        typer.echo(json.dumps(summary))
        return
    out = Console()
    out.print(rounds_table(result.history))
    out.print(results_table(summary))
    out.print(f"report: sheaf report {result.run_path}")


@app.command()
def report(
    run: Annotated[Path, typer.Argument(help="The run's .sqlite store (see runs/).")],
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Output folder; default beside the store.")] = None,
) -> None:
    """Write PNG plots and a self-contained HTML report of a run."""
    from sheaf.run.report import report_run

    with _clear_errors():
        paths = report_run(run, out)
    for path in paths:
        typer.echo(str(path))


@app.command()
def datasets() -> None:
    """List the datasets sheaf can load offline."""
    from rich.table import Table

    from sheaf.data.catalog import available_datasets

    table = Table(title="Datasets")
    for col in ("name", "description", "natural partition"):
        table.add_column(col)
    for spec in available_datasets():
        table.add_row(spec.name, spec.description, spec.natural_partition or "-")
    Console().print(table)


@app.command()
def strategies() -> None:
    """List the aggregation strategies and their hyperparameters (set with --set strategy.KEY=VALUE)."""
    from rich.table import Table

    from sheaf.strategies.registry import available_strategies, describe_strategy

    table = Table(title="Strategies (--set strategy=NAME --set strategy.KEY=VALUE)")
    for col in ("name", "hyperparameters (defaults)", "server sees", "client steps", "what it does"):
        table.add_column(col)
    for name in available_strategies():
        info = describe_strategy(name)
        hyper = ", ".join(f"{k}={v!r}" for k, v in info["hyperparameters"].items()) or "-"
        sees = "weighted sum" if info["sum_only"] else "each update"
        table.add_row(name, hyper, sees, ", ".join(info["client_steps"]) or "-", info["summary"])
    Console().print(table)


@app.command()
def partition(
    config: ConfigArg = None,
    overrides: SetOpt = None,
    limit: Annotated[int, typer.Option(help="Show at most this many clients.")] = 50,
) -> None:
    """Show how a config deals the data to clients: samples and labels per client."""
    from sheaf.cli._console import partition_table
    from sheaf.data.catalog import build_federation
    from sheaf.data.summary import partition_summary

    with _clear_errors():
        cfg = _config(config, overrides)
        federation = build_federation(cfg.data, cfg.seed)
    Console().print(partition_table(federation, partition_summary(federation), limit))


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(str(k))} = {_toml_value(v)}" for k, v in value.items()) + "}"
    return repr(value)


@app.command("config")
def show_config(config: ConfigArg = None, overrides: SetOpt = None) -> None:
    """Print the resolved config as TOML: every key, with its value."""
    with _clear_errors():
        cfg = _config(config, overrides)
    raw = cfg.to_dict()
    lines = [f"{k} = {_toml_value(v)}" for k, v in raw.items() if not isinstance(v, dict)]
    for section, values in raw.items():
        if isinstance(values, dict):
            lines += ["", f"[{section}]"] + [f"{k} = {_toml_value(v)}" for k, v in values.items()]
    typer.echo("\n".join(lines))
