"""The ``sheaf`` command line: simulate, report, datasets, strategies, partition, analyze, check,
config (and, from :mod:`sheaf.cli._deploy`, server, client, keys, status).

Every command turns a :class:`~sheaf.core.errors.SheafError` into one line on standard
error — ``error: <what was wrong and what to do>`` — and exit status 2.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from sheaf.cli._common import ConfigArg, SetOpt, app, clear_errors, load_cli_config
from sheaf.core.errors import SheafError

__all__ = ["app"]


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
    from sheaf.cli._console import ProgressListener, StoreListener, interrupted_message, results_table, rounds_table
    from sheaf.run.simulate import simulate as run_simulation

    err = Console(stderr=True)
    listener = StoreListener() if (as_json or quiet) else ProgressListener(err)
    with clear_errors():
        cfg = load_cli_config(config, overrides)
        try:
            result = run_simulation(cfg, listener=listener)
        except KeyboardInterrupt:
            typer.echo(interrupted_message(cfg, listener.store, listener.rounds_done), err=True)
            raise typer.Exit(130) from None
        finally:
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

    with clear_errors():
        paths = report_run(run, out)
    for path in paths:
        typer.echo(str(path))


@app.command()
def datasets() -> None:
    """List the datasets sheaf can load offline."""
    from sheaf.cli._console import narrow_table
    from sheaf.data.catalog import available_datasets

    # One block per dataset: the install command must be copyable whole at any width.
    table = narrow_table("Datasets (--set dataset=NAME)", show_header=False, show_lines=False)
    table.add_column("what", style="bold", no_wrap=True)
    table.add_column("value", overflow="fold")
    for spec in available_datasets():
        table.add_row(spec.name, spec.description)
        if spec.natural_partition:
            table.add_row("", f"natural partition: {spec.natural_partition}")
        if spec.install:
            table.add_row("", "install:")
            table.add_row("", spec.install, style="cyan")
        table.add_row("", "")
    Console(soft_wrap=False).print(table)


@app.command()
def strategies() -> None:
    """List the aggregation strategies and their hyperparameters (set with --set strategy.KEY=VALUE)."""
    from sheaf.cli._console import narrow_table
    from sheaf.strategies.registry import available_strategies, describe_strategy

    table = narrow_table("Strategies (--set strategy=NAME --set strategy.KEY=VALUE)")
    table.add_column("name", style="bold", no_wrap=True)
    table.add_column("what it does · hyperparameters (defaults) · server sees · client steps", overflow="fold")
    for name in available_strategies():
        info = describe_strategy(name)
        hyper = ", ".join(f"{k}={v!r}" for k, v in info["hyperparameters"].items()) or "none"
        sees = "a weighted sum" if info["sum_only"] else "each update"
        steps = ", ".join(info["client_steps"]) or "none"
        table.add_row(name, f"{info['summary']}\n[dim]{hyper} · sees {sees} · client steps: {steps}[/]")
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

    with clear_errors():
        cfg = load_cli_config(config, overrides)
        federation = build_federation(cfg.data, cfg.seed)
    Console().print(partition_table(federation, partition_summary(federation), limit))


@app.command()
def analyze(
    config: ConfigArg = None,
    overrides: SetOpt = None,
    column: Annotated[
        list[str] | None, typer.Option("--column", "-c", help="Show only these columns (repeatable).")
    ] = None,
    limit: Annotated[int, typer.Option(help="Show at most this many clients per column.")] = 20,
    bins: Annotated[int, typer.Option(help="Histogram bins over each numeric column's range.")] = 10,
    as_json: Annotated[bool, typer.Option("--json", help="Print the whole profile as one JSON object.")] = False,
    every: Annotated[bool, typer.Option("--all", help="A table per column (default: the 3 that differ most).")] = False,
) -> None:
    """Summarise every column on every client (counts, means, stds, histograms, missingness) from
    federated statistics, to see how non-IID the federation is before training."""
    from sheaf.cli._analyze import client_table, json_ready, most_different, problems_table, summary_table
    from sheaf.data.analytics import profile_dataset

    with clear_errors():
        cfg = load_cli_config(config, overrides)
        if bins < 1:
            raise SheafError(f"--bins must be >= 1, got {bins}")
        profile = profile_dataset(cfg.data, cfg.seed, bins=bins)
        if column:
            shown = [profile.column(c) for c in column]
        else:
            shown = list(profile.columns) if every else most_different(profile, 3)
    if as_json:
        typer.echo(json.dumps(json_ready(profile.to_dict()), allow_nan=False))
        return
    out = Console()
    title = f"{cfg.data.dataset}: {len(profile.names)} clients ({cfg.data.partition}), from federated statistics"
    out.print(summary_table(profile, title))
    problems = problems_table(profile)
    if problems is not None:
        out.print(problems)
    for p in shown:
        out.print(client_table(p, limit))
    hidden = len(profile.columns) - len(shown)
    if hidden > 0:
        out.print(f"[dim]{hidden} more column(s): --column NAME for one, --all for every one[/]", highlight=False)


@app.command()
def check(
    data: Annotated[Path, typer.Argument(help="A CSV file of one data owner's rows.", show_default=False)],
    config: ConfigArg = None,
    overrides: SetOpt = None,
) -> None:
    """Check a data file against the schema of the config's dataset, as a client does before training."""
    import pandas as pd

    from sheaf.core.errors import DataError
    from sheaf.data.catalog import dataset_spec, load_dataset

    with clear_errors():
        cfg = load_cli_config(config, overrides)
        raw = load_dataset(cfg.data.dataset)
        spec = dataset_spec(cfg.data.dataset)
        if raw.preprocessor is None:
            raise DataError(f"dataset {cfg.data.dataset!r} has no tabular schema to check a file against")
        try:
            frame = pd.read_csv(data)
        except FileNotFoundError:
            raise DataError(f"data file {str(data)!r} not found") from None
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
            raise DataError(f"data file {str(data)!r} is not a readable CSV file: {exc}") from None
        schema = raw.preprocessor.schema
        schema.check(frame, who=str(data))
        if spec is not None and spec.from_table is not None:
            try:  # the labels too, as the client's loader reads them
                spec.from_table(frame)
            except DataError as exc:
                raise DataError(f"{data}: {exc}") from None
    typer.echo(
        f"ok: {data}: {len(frame)} rows match the {cfg.data.dataset} schema ({len(schema.columns)} columns and the label)"
    )


@app.command("config")
def show_config(config: ConfigArg = None, overrides: SetOpt = None) -> None:
    """Print the resolved config as TOML: every key with its value, the strategy's hyperparameters included."""
    from sheaf.core.toml import dumps
    from sheaf.data.catalog import dataset_defaults
    from sheaf.strategies.registry import describe_strategy

    with clear_errors():
        cfg = load_cli_config(config, overrides)
        hyper = describe_strategy(cfg.strategy.name)["hyperparameters"]
    raw = cfg.to_dict()
    raw["strategy"] = {**raw["strategy"], **{k: v for k, v in hyper.items() if k not in raw["strategy"]}}
    header = []
    if dataset_defaults(cfg.data.dataset):
        header.append(f"# starts from the {cfg.data.dataset} dataset's own defaults; what you set wins")
    typer.echo("\n".join([*header, dumps(raw)]))


# The deployment commands (server, client, keys, status) register themselves on ``app`` when
# imported; last, so that help lists them after the commands above.
from sheaf.cli import _deploy, _runs  # noqa: E402, F401
