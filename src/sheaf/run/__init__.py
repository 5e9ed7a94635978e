"""The round loop, the run store, ``simulate`` and ``report_run``."""

from sheaf.run.baseline import BaselineResult, pooled_baseline
from sheaf.run.loop import Federated, RoundListener, run_rounds
from sheaf.run.personalize import PERSONALIZED, personal_steps, personalized_evaluation, wants_personalization
from sheaf.run.population import Population
from sheaf.run.report import report_run
from sheaf.run.simulate import SimulationResult, open_or_create_store, resolve_config, simulate
from sheaf.run.store import FORMAT_VERSION, RunStore

__all__ = [
    "FORMAT_VERSION",
    "PERSONALIZED",
    "BaselineResult",
    "Federated",
    "Population",
    "RoundListener",
    "RunStore",
    "SimulationResult",
    "open_or_create_store",
    "personal_steps",
    "personalized_evaluation",
    "pooled_baseline",
    "report_run",
    "resolve_config",
    "run_rounds",
    "simulate",
    "wants_personalization",
]
