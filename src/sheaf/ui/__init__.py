"""``sheaf ui``: a live dashboard of the runs in a folder, served on this machine.

The page lists every run (simulations and ``sheaf server`` runs alike) with its key
settings and results, compares several on one chart, and shows one run's rounds as they
are committed: central accuracy and loss, the clients' mean, worst 10% and min–max band,
Jain's index, privacy spent, seconds per round, dropouts and their reasons, the clients by
name with their data and accuracy, and the config as TOML. See docs/dashboard.md.

Example:
    >>> check_bind("127.0.0.1", "")   # loopback: fine without a token
"""

from sheaf.ui.access import check_bind, is_loopback
from sheaf.ui.app import create_app
from sheaf.ui.server import Dashboard, dashboard_url, serve
from sheaf.ui.views import RunsView, UnknownRun

__all__ = ["Dashboard", "RunsView", "UnknownRun", "check_bind", "create_app", "dashboard_url", "is_loopback", "serve"]
