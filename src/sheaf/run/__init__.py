"""The round loop, the composition root, the run store, ``simulate`` and ``report_run``."""

from sheaf.run.assemble import RunParts, assemble, builtin_client_steps, open_or_create_store
from sheaf.run.baseline import BaselineResult, pooled_baseline
from sheaf.run.loop import Federated, RoundListener, run_rounds
from sheaf.run.personalize import (
    FINETUNE_EVALUATE,
    PERSONALIZED,
    personal_steps,
    personalized_evaluation,
    personalized_evaluation_steps,
    wants_personalization,
)
from sheaf.run.population import Population
from sheaf.run.report import report_run
from sheaf.run.simulate import SimulationResult, resolve_config, simulate
from sheaf.run.store import FORMAT_VERSION, RunStore
from sheaf.run.store_files import holds_nothing, remove_abandoned, remove_files, temporary_name

__all__ = [
    "FINETUNE_EVALUATE",
    "FORMAT_VERSION",
    "PERSONALIZED",
    "BaselineResult",
    "Federated",
    "Population",
    "RoundListener",
    "RunParts",
    "RunStore",
    "SimulationResult",
    "assemble",
    "builtin_client_steps",
    "holds_nothing",
    "open_or_create_store",
    "personal_steps",
    "personalized_evaluation",
    "personalized_evaluation_steps",
    "pooled_baseline",
    "remove_abandoned",
    "remove_files",
    "report_run",
    "resolve_config",
    "run_rounds",
    "simulate",
    "temporary_name",
    "wants_personalization",
]
