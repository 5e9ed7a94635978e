"""The ``sheaf`` command line (typer + rich)."""

from sheaf.cli.app import app

__all__ = ["app"]
