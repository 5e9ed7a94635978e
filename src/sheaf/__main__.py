"""``python -m sheaf`` runs the command line."""

from sheaf.cli.app import app

app(prog_name="sheaf")
