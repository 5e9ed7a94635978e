"""What every command module shares: the typer ``app`` they register on, the config
argument and ``--set`` option, and the one way bad input ends a command.

Command modules (:mod:`sheaf.cli.app`, :mod:`sheaf.cli._deploy`) import from here and never
from each other's commands, so the modules of ``sheaf.cli`` form no import cycle.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer

from sheaf.core.config import RunConfig
from sheaf.core.errors import SheafError

__all__ = ["EXIT_BAD_INPUT", "ConfigArg", "SetOpt", "app", "clear_errors", "load_cli_config"]

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="sheaf: federated learning — simulate, deploy, protect, judge.",
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        from sheaf.core._version import __version__

        typer.echo(f"sheaf {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool, typer.Option("--version", "-V", callback=_version, is_eager=True, help="Print sheaf's version and exit.")
    ] = False,
) -> None:
    """sheaf: federated learning — simulate, deploy, protect, judge."""


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
def clear_errors() -> Iterator[None]:
    """Turn a :class:`~sheaf.core.errors.SheafError` into one ``error: ...`` line and exit status 2."""
    try:
        yield
    except SheafError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(EXIT_BAD_INPUT) from None


def load_cli_config(path: Path | None, overrides: list[str] | None) -> RunConfig:
    """The run config from an optional TOML file and ``--set`` overrides, on top of the chosen
    dataset's own defaults; the strategy's hyperparameters are checked here too, so a typo
    (``strategy.fractoin``) is refused by every command, not only by the one that trains.

    Raises:
        ConfigError: on any invalid setting, strategy hyperparameters included.
    """
    from sheaf.run.simulate import load_run_config
    from sheaf.strategies.registry import build_strategy

    config = load_run_config(path, overrides or [])
    build_strategy(config.strategy)
    return config
