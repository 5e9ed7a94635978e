"""The round loop, the run store, ``simulate`` and ``report_run``."""

from sheaf.run.loop import Federated, RoundListener, run_rounds
from sheaf.run.report import report_run
from sheaf.run.simulate import SimulationResult, open_or_create_store, resolve_config, simulate
from sheaf.run.store import FORMAT_VERSION, RunStore

__all__ = [
    "FORMAT_VERSION",
    "Federated",
    "RoundListener",
    "RunStore",
    "SimulationResult",
    "open_or_create_store",
    "report_run",
    "resolve_config",
    "run_rounds",
    "simulate",
]
