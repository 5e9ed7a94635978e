"""``sheaf ui``: a live dashboard of the runs in a folder, served on this machine.

The page lists every run (simulations and ``sheaf server`` runs alike) with its key
settings and results, compares several on one chart, and shows one run's rounds as they
are committed: central accuracy and loss, the clients' mean, worst 10% and min–max band,
Jain's index, privacy spent, seconds and bytes per round, dropouts and their reasons, the clients by
name with their data and accuracy, and the config as TOML. See docs/dashboard.md.

Needs the ``ui`` extra (``pip install 'sheaf[ui]'``: Starlette and uvicorn).

Example:
    >>> check_bind("127.0.0.1", "")   # loopback: fine without a token
"""

from sheaf.ui.access import COOKIE, MIN_TOKEN_LENGTH, AccessMiddleware, check_bind, is_loopback
from sheaf.ui.app import STATIC, create_app
from sheaf.ui.server import Dashboard, dashboard_url, free_port, serve
from sheaf.ui.views import MAX_DROPOUT_ROWS, RunsView, UnknownRun

__all__ = [
    "COOKIE",
    "MAX_DROPOUT_ROWS",
    "MIN_TOKEN_LENGTH",
    "STATIC",
    "AccessMiddleware",
    "Dashboard",
    "RunsView",
    "UnknownRun",
    "check_bind",
    "create_app",
    "dashboard_url",
    "free_port",
    "is_loopback",
    "serve",
]
