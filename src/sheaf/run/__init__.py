"""The round loop, the composition root, the run store, ``simulate`` and ``report_run``."""

from sheaf.run.assemble import RunParts, assemble, builtin_client_steps, open_or_create_store
from sheaf.run.baseline import BaselineResult, pooled_baseline
from sheaf.run.buffered import (
    RESUME_KEY,
    WAKE_SECONDS,
    BufferStep,
    buffer_step,
    run_buffered,
    staleness_problem,
    staleness_weight,
)
from sheaf.run.clock import Job, RoundPlan, VirtualClock
from sheaf.run.export import FORMATS, client_names, client_rows, export_run, failure_rows, finite, round_rows
from sheaf.run.listing import RunSummary, list_runs, run_name, summarize, summarize_run
from sheaf.run.liveness import STALE_AFTER, RunState, process_alive, run_state, writer_identity
from sheaf.run.loop import Federated, RoundListener, monitor_split, run_rounds
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
from sheaf.run.simulate import SimulationResult, load_run_config, resolve_config, simulate
from sheaf.run.store import FORMAT_VERSION, RunStore
from sheaf.run.store_files import holds_nothing, remove_abandoned, remove_files, temporary_name
from sheaf.run.traffic import RoundTraffic, missed_rounds, round_traffic, update_bytes

__all__ = [
    "FINETUNE_EVALUATE",
    "FORMATS",
    "FORMAT_VERSION",
    "PERSONALIZED",
    "RESUME_KEY",
    "STALE_AFTER",
    "WAKE_SECONDS",
    "BaselineResult",
    "BufferStep",
    "Federated",
    "Job",
    "Population",
    "RoundListener",
    "RoundPlan",
    "RoundTraffic",
    "RunParts",
    "RunState",
    "RunStore",
    "RunSummary",
    "SimulationResult",
    "VirtualClock",
    "assemble",
    "buffer_step",
    "builtin_client_steps",
    "client_names",
    "client_rows",
    "export_run",
    "failure_rows",
    "finite",
    "holds_nothing",
    "list_runs",
    "load_run_config",
    "missed_rounds",
    "monitor_split",
    "open_or_create_store",
    "personal_steps",
    "personalized_evaluation",
    "personalized_evaluation_steps",
    "pooled_baseline",
    "process_alive",
    "remove_abandoned",
    "remove_files",
    "report_run",
    "resolve_config",
    "round_rows",
    "round_traffic",
    "run_buffered",
    "run_name",
    "run_rounds",
    "run_state",
    "simulate",
    "staleness_problem",
    "staleness_weight",
    "summarize",
    "summarize_run",
    "temporary_name",
    "update_bytes",
    "wants_personalization",
    "writer_identity",
]
