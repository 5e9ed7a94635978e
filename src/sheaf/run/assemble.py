"""The composition root: a run's parts, assembled from its config in one place.

``sheaf.simulate`` and ``sheaf server`` assemble a run the same way, here: the strategy
(the configured one, or the caller's), checked against the cohort it will get; the
differential-privacy plan wrapped around it; the task clients run (in a simulation with
the configured attack and the simulated clients' own privacy settings); the initial
params from the run seed; the run store's description of the run; and the client steps the
run may ask its clients to run — given to backends by value once, so that only names need
travel to worker processes or remote clients.

Only what differs stays with each caller: a simulation builds or takes a federation and a
backend; a server reads its authorised clients and listens.

It also holds the built-in client steps a deployed client agrees to run unless its owner
says otherwise (:func:`builtin_client_steps`): values listed here, not a registry filled
by imports.

Example:
    >>> from sheaf.core.config import load_config
    >>> from sheaf.task.base import EvalResult, FitResult
    >>> import numpy as np
    >>> from sheaf.core.params import Params
    >>> class Zero:
    ...     def init_params(self, seed): return Params({"w": np.zeros(2)})
    ...     def fit(self, params, data, instructions): return FitResult(params, len(data))
    ...     def evaluate(self, params, data): return EvalResult(0.0, len(data))
    >>> parts = assemble(load_config(overrides=["strategy=fedper"]), population=20, task=Zero())
    >>> parts.strategy.name, [step.name for step in parts.client_steps]
    ('fedper', ['fedper', 'fedper:personal', 'finetune_evaluate'])
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sheaf.compress.plan import CompressionPlan, compression_plan
from sheaf.compress.step import COMPRESS_STEP, with_compression
from sheaf.core.acceptance import OperatorLimits
from sheaf.core.config import RunConfig
from sheaf.core.errors import ConfigError, SheafError, StoreError
from sheaf.core.params import Params
from sheaf.core.rng import Purpose, seed_for
from sheaf.core.sampling import cohort_size
from sheaf.privacy.aggregation import with_privacy
from sheaf.privacy.client_steps import PRIVACY_STEPS
from sheaf.privacy.ledger import PrivateClientTask, simulated_client_privacy
from sheaf.privacy.plan import EVALUATION_OFF, PrivacyPlan, deployed_privacy_plan, privacy_plan
from sheaf.run.liveness import writer_identity
from sheaf.run.personalize import FINETUNE_EVALUATE, personalized_evaluation_steps, wants_personalization
from sheaf.run.store import RunStore
from sheaf.run.store_files import holds_nothing, remove_files
from sheaf.secagg.plan import SecAggPlan, secagg_plan
from sheaf.secagg.step import SECAGG_ENCODE, with_secure_aggregation
from sheaf.strategies.base import Strategy
from sheaf.strategies.ditto import ditto_client_step
from sheaf.strategies.fednova import fednova_client_step
from sheaf.strategies.fedper import fedper_client_step
from sheaf.strategies.qfedavg import qffl_client_step
from sheaf.strategies.registry import build_strategy
from sheaf.strategies.scaffold import scaffold_client_step
from sheaf.task.attack import AttackedTask, attack_task
from sheaf.task.base import Task
from sheaf.task.client_steps import ClientStep, personalizing, steps_by_name

__all__ = ["RunParts", "assemble", "builtin_client_steps", "open_or_create_store"]


@dataclass(frozen=True)
class RunParts:
    """What a run is made of, before it is stored and run.

    Attributes:
        config: the run's config.
        strategy: the strategy, with privacy when the config asks for it.
        task: the task the clients run (simulation: attacked and privacy-wrapped as
            configured; the server also evaluates centrally with it).
        plan: the resolved privacy plan (None without differential privacy).
        population: the number of clients.
        cohort: clients sampled per round (the expected number with Poisson sampling).
        initial: the initial global params, from the run seed.
        client_steps: every client step the run may ask its clients to run.
        meta: what the run store records about the run's assembly.
        limits: what a deployment's operator bounds in every update (None in simulation).
        secagg: the secure-aggregation plan (None without secure aggregation).
        compression: the compression plan (None without compression).
    """

    config: RunConfig
    strategy: Strategy
    task: Task
    plan: PrivacyPlan | None
    population: int
    cohort: int
    initial: Params
    client_steps: tuple[ClientStep, ...]
    meta: Mapping[str, Any]
    limits: OperatorLimits | None = None
    secagg: SecAggPlan | None = None
    compression: CompressionPlan | None = None


def assemble(
    config: RunConfig,
    *,
    population: int,
    task: Task,
    strategy: Strategy | None = None,
    deployed: bool = False,
    num_classes: int = 0,
    weight_caps: Mapping[int, int] | None = None,
    secret: bytes = b"",
) -> RunParts:
    """Assemble a run's parts from its config (see the module docstring).

    Args:
        config: the run's config.
        population: how many clients the run has.
        task: the user's task.
        strategy: use this strategy instead of ``config.strategy.name``.
        deployed: assemble a deployed server's run: secure noise, every client asked to
            keep its own privacy ledger, no simulated attack or client settings.
        num_classes: classes of the labels (a simulated ``label_flip`` attack needs them).
        weight_caps: a deployment's per-client declared maxima of examples.
        secret: a deployed server's run secret: its noise for a round is keyed by it.

    Raises:
        SheafError: on any setting that does not fit (one clear message).
    """
    chosen = strategy if strategy is not None else build_strategy(config.strategy)
    size = cohort_size(population, config.strategy.fraction, config.strategy.min_clients)
    _check_clocked(config, deployed)
    chosen.check_cohort(config.asynchronous.buffer if config.asynchronous.enabled else size)
    meta: dict[str, Any] = {"population": population, "threads": config.threads}
    runs = task
    if deployed:
        # Secure noise, keyed by the run secret and the round; clients keep their own ledgers.
        plan = deployed_privacy_plan(config, population, noise_key=secret)
    else:
        runs = attack_task(task, config.attack, population, num_classes, config.seed, size)
        plan = privacy_plan(config, population)
        if isinstance(runs, AttackedTask):
            meta["attack"] = {
                "name": config.attack.name,
                "per_round": config.attack.per_round,
                "malicious_clients": sorted(runs.malicious),
            }
    initial = runs.init_params(seed_for(config.seed, Purpose.INIT))
    if plan is not None:
        chosen = with_privacy(chosen, plan)
        meta["privacy"] = plan.describe()
        meta["federated_evaluation"] = EVALUATION_OFF  # the loop never evaluates on clients here
        p = config.privacy
        if not deployed and (p.mode == "local" or p.client_budget or p.client_budgets):
            # Only local noise and budgets live on the clients; a central run keeps the plain
            # task (so a batching backend can still train it).
            runs = simulated_client_privacy(runs, p)
    secure = secagg_plan(config, population, initial.num_elements)
    if secure is not None:
        if deployed:
            secure = _deployed_secagg(secure)
        # The sum-only strategy (with its private mean, if any) runs through SecAgg+; simulated
        # clients may draw their rounding and noise from the run's seed (reproducible runs).
        chosen = with_secure_aggregation(chosen, secure)
        meta["secagg"] = secure.describe()
        if not deployed and not isinstance(runs, PrivateClientTask):
            runs = simulated_client_privacy(runs, config.privacy)
    compression = compression_plan(config, initial)
    if compression is not None:
        if secure is not None:
            raise ConfigError(
                "secure aggregation already sends every update quantised into its ring, by the same quantiser "
                "(secagg.bits bits per coordinate); leave compression.encoder and compression.download at none "
                "with secagg.enabled=true"
            )
        if deployed and compression.download != "none":
            raise ConfigError(
                "download compression runs in simulation for now: deployed clients are sent the model "
                "(set compression.download=none for sheaf server)"
            )
        # Outermost on the clients (clip, then noise, then compress); the strategy's steps see decoded updates.
        chosen = with_compression(chosen, compression)
        meta["compression"] = compression.describe()
    meta["strategy"] = chosen.name
    if config.asynchronous.enabled:
        _check_asynchronous(config, chosen)
    steps = chosen.client_steps
    if wants_personalization(config, chosen):
        steps = (*steps, *personalized_evaluation_steps(chosen))
    limits = None
    if deployed:
        server = config.server
        limits = OperatorLimits(
            server.max_examples,
            server.max_update_norm or math.inf,
            server.max_norm_ratio,
            dict(weight_caps or {}),
        )
    return RunParts(config, chosen, runs, plan, population, size, initial, steps, meta, limits, secure, compression)


def _deployed_secagg(plan: SecAggPlan) -> SecAggPlan:
    """The plan for ``sheaf server``: real dropouts only, and clients' bits from their CSPRNG.

    Raises:
        ConfigError: on a simulation-only setting.
    """
    if plan.dropout > 0 or plan.stand_in:
        raise ConfigError(
            "secagg.dropout and secagg.stand_in are for simulations; a deployment runs the real protocol with "
            "its real dropouts: set secagg.dropout=0 and secagg.stand_in=false for sheaf server"
        )
    return dataclasses.replace(plan, noise="secure")


def _check_clocked(config: RunConfig, deployed: bool) -> None:
    """Refuse what the virtual clock and FedBuff do not support (yet), one line each."""
    devices, buffered = config.devices, config.asynchronous
    if deployed and devices.enabled:
        raise ConfigError(
            "simulated devices run in simulation only: a deployment's devices are real; "
            "set devices.enabled=false for sheaf server (asynchronous.enabled needs no devices there)"
        )
    if devices.overselect > 0 and config.strategy.sampling == "poisson":
        raise ConfigError(
            "devices.overselect needs strategy.sampling = 'fixed': a Poisson cohort has no size to over-select"
        )
    if not buffered.enabled:
        return
    if not devices.enabled and not deployed:
        raise ConfigError(
            "asynchronous.enabled needs devices.enabled = true in a simulation: the virtual clock orders the arrivals"
        )
    if deployed and config.evaluation.federated is True:
        raise ConfigError(
            "a deployed asynchronous run does no federated evaluation (it would stop the clients that train); "
            "set evaluation.federated=false (or auto) and give the server --test-data for central evaluation"
        )
    if devices.deadline > 0 or devices.overselect > 0:
        raise ConfigError(
            "devices.deadline and devices.overselect shape synchronous rounds; set them to 0 with asynchronous.enabled"
        )
    if config.strategy.sampling != "fixed":
        raise ConfigError("asynchronous.enabled needs strategy.sampling = 'fixed'")
    if config.privacy.mode != "none" or config.secagg.enabled:
        raise ConfigError(
            "asynchronous aggregation does not support differential privacy or secure aggregation yet; "
            "set privacy.mode='none' and secagg.enabled=false"
        )
    if config.compression.encoder != "none" or config.compression.download != "none":
        raise ConfigError(
            "asynchronous aggregation does not support update compression yet; "
            "set compression.encoder='none' and compression.download='none'"
        )
    if config.strategy.min_clients > buffered.buffer:
        raise ConfigError(
            f"strategy.min_clients ({config.strategy.min_clients}) exceeds asynchronous.buffer ({buffered.buffer}): "
            "no server step could ever be taken; lower it"
        )


def _check_asynchronous(config: RunConfig, strategy: Strategy) -> None:
    """FedBuff keeps no per-client state and runs no client half (not yet)."""
    if strategy.client_steps or wants_personalization(config, strategy):
        raise ConfigError(
            f"strategy {strategy.name!r} runs steps on its clients (or personalises them), which asynchronous "
            "aggregation does not support yet; use fedavg, fedprox, fedavgm, fedadam, fedyogi, fedadagrad, "
            "median, trimmed_mean or krum"
        )


def builtin_client_steps() -> tuple[ClientStep, ...]:
    """Every client step sheaf ships: what a deployed client runs unless told otherwise.

    The client halves of SCAFFOLD, FedNova, q-FFL, FedPer and Ditto, differential
    privacy's budget check, clipping and local noise, update compression, and personalised
    evaluation.

    Example:
        >>> sorted(step.name for step in builtin_client_steps())[:5]
        ['compress', 'ditto', 'ditto:personal', 'dp_clip', 'fednova']
    """
    own = (
        scaffold_client_step(),
        fednova_client_step(),
        qffl_client_step(),
        fedper_client_step(),
        ditto_client_step(),
        *PRIVACY_STEPS,
        SECAGG_ENCODE,
        COMPRESS_STEP,
    )
    personal = tuple(personalizing(step) for step in own if step.personal)
    return tuple(steps_by_name((*own, *personal, FINETUNE_EVALUATE)).values())


def _with_defaults(stored: Mapping[str, Any]) -> Mapping[str, Any]:
    """A stored config with the sections added since it was written at their defaults (they
    change nothing when off), so that a run stored by an older sheaf still resumes."""
    try:
        return RunConfig.from_dict(stored).to_dict()
    except SheafError:  # a config this sheaf cannot read: compared as it is, and refused below
        return stored


def open_or_create_store(
    path: Path, config: RunConfig, params: Params, state: object, meta: Mapping[str, Any]
) -> RunStore:
    """Open the run at ``path`` to resume it (same config), or create it with round 0.

    Either way the store records who writes it now (:func:`~sheaf.run.liveness.writer_identity`),
    so that readers can tell a running run from one whose writer died; a resumed run that
    had not finished is marked running again.
    A file there that holds nothing (what an older sheaf killed while creating the store
    left: an empty file, or a SQLite file without tables) is replaced by a new store.

    Raises:
        StoreError: if a run exists there with a different config.
    """
    if path.exists() and holds_nothing(path):
        remove_files(path)
    if not path.exists():
        return RunStore.create(path, config.to_dict(), params, state, {**meta, "writer": writer_identity()})
    store = RunStore.open(path)
    stored = _with_defaults(store.config)
    if stored != config.to_dict():
        store.close()
        changed = sorted(k for k in set(stored) | set(config.to_dict()) if stored.get(k) != config.to_dict().get(k))
        raise StoreError(
            f"run {str(path)!r} exists with a different config (differs in: {', '.join(changed)}); "
            "choose another run name or delete the file"
        )
    store.set_meta("writer", writer_identity())
    if store.meta.get("status") != "finished":
        store.set_meta("status", "running")
    return store
