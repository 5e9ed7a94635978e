"""The Backend interface: where a round's client work runs.

The unit of work is a *cohort*: the round loop asks a backend once per round to "run these
clients from these params", and once per evaluation to "evaluate these clients". How —
a loop in this process, long-lived worker processes, a vectorised batch, remote machines —
is the backend's business; strategies and tasks never know. A client whose work fails
comes back as a :class:`~sheaf.core.errors.ClientFailure` in the outcome, never as an
exception out of the backend: the round loop treats it as a dropout.

Example:
    >>> import numpy as np
    >>> from sheaf.core.params import Params
    >>> Cohort(round=1, client_ids=(0, 3), params=Params({"w": np.zeros(2)}), train=TrainConfig()).size
    2
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, Self, runtime_checkable

from sheaf.core.acceptance import UpdateRule
from sheaf.core.config import EngineConfig, TrainConfig
from sheaf.core.errors import BackendError, ClientFailure
from sheaf.core.exactsum import ExactSum
from sheaf.core.params import Params
from sheaf.core.update import Metrics, Scalar, TensorGroups, Update
from sheaf.data.dataset import Federation
from sheaf.evaluation.central import evaluate_shards
from sheaf.strategies.base import MaskedSum
from sheaf.task.base import EvalResult, Task
from sheaf.task.client_steps import ClientStep

__all__ = [
    "Backend",
    "BackendBase",
    "CentralEvaluator",
    "ClientReport",
    "Cohort",
    "EvalOutcome",
    "FitOutcome",
    "RoundWork",
    "SimulationEnv",
]


@dataclass(frozen=True)
class SimulationEnv:
    """What a simulation backend needs to start: the task, the data, and run settings.

    Attributes:
        task: the user's task.
        federation: every client's data.
        seed: the run seed (clients derive their streams from it).
        threads: torch threads per worker.
        engine: how backends run the work (workers, memory, Ray address, timeouts).
        cohort_size: clients per round, where known (0: unknown); ``auto`` weighs it.
        client_steps: every client step the run may ask its clients to run (the
            strategy's and personalised evaluation's). Workers in other processes are
            given these once at start, then only names travel: a cohort's steps must be
            among them.
        device: where torch computes, resolved for this machine (``cpu``, ``cuda`` for
            every GPU, ``cuda:N``; :func:`sheaf.task.device.resolve_device`).
    """

    task: Task
    federation: Federation
    seed: int
    threads: int = 1
    engine: EngineConfig = field(default_factory=EngineConfig)
    cohort_size: int = 0
    client_steps: tuple[ClientStep, ...] = ()
    device: str = "cpu"


@dataclass(frozen=True)
class RoundWork:
    """What every client of a training round is given: the same for all of them.

    Attributes:
        round: the round number (1-based).
        params: the global params every client starts from.
        train: local training settings.
        options: strategy settings sent with the instructions.
        payload: tensors the strategy sends to every client of the round.
        steps: the client steps every client runs around its training, outermost first.
        rule: the acceptance rule for updates that are added up where they arrive (a
            worker's partial sum, the deployed server's running sum); None where the
            round loop checks whole updates itself.
    """

    round: int
    params: Params
    train: TrainConfig
    options: Mapping[str, Scalar] = field(default_factory=dict)
    payload: TensorGroups = field(default_factory=dict)
    steps: tuple[ClientStep, ...] = ()
    rule: UpdateRule | None = None


@dataclass(frozen=True)
class Cohort:
    """One round's training work.

    Attributes:
        round: the round number (1-based).
        client_ids: the sampled clients, in increasing order.
        params: the global params every client starts from.
        train: local training settings.
        options: strategy settings sent with the instructions.
        payload: tensors the strategy sends to every client of the round.
        client_states: the persistent state of each cohort client that has one.
        reduce: the strategy needs only the weighted sum of the updates, so a backend may
            return an exact sum (:attr:`FitOutcome.summed`) instead of the updates; each
            update is then checked against ``rule`` before it joins a sum.
        steps: the client steps every client runs around its training, outermost first.
        rule: what an update must carry to be aggregated (the strategy's
            :class:`~sheaf.core.acceptance.UpdateRule`).
    """

    round: int
    client_ids: Sequence[int]
    params: Params
    train: TrainConfig
    options: Mapping[str, Scalar] = field(default_factory=dict)
    payload: TensorGroups = field(default_factory=dict)
    client_states: Mapping[int, TensorGroups] = field(default_factory=dict)
    reduce: bool = False
    steps: tuple[ClientStep, ...] = ()
    rule: UpdateRule = field(default_factory=UpdateRule)

    @property
    def size(self) -> int:
        """Number of clients in the cohort."""
        return len(self.client_ids)

    @property
    def work(self) -> RoundWork:
        """What every client of the cohort is given (with the rule where updates are summed)."""
        return RoundWork(
            self.round,
            self.params,
            self.train,
            self.options,
            self.payload,
            self.steps,
            self.rule if self.reduce else None,
        )


@dataclass(frozen=True)
class ClientReport:
    """What the round loop records of a client whose update went into a pre-reduced sum.

    Attributes:
        client_id: the client.
        num_examples: the examples it claimed (its weight).
        metrics: the metrics it shared.
        norm: its delta's L2 norm, where the backend measured it (NaN otherwise).
    """

    client_id: int
    num_examples: int
    metrics: Metrics = field(default_factory=dict)
    norm: float = float("nan")


@dataclass(frozen=True)
class FitOutcome:
    """The result of a cohort.

    Attributes:
        updates: the updates of the clients that succeeded (sorted by client id).
        failures: the clients that failed, with reasons.
        client_states: new persistent state of clients whose state changed.
        summed: for a cohort with ``reduce``: the exact sum of the updates a backend
            already added up (checked like any update), or None.
        reports: the clients whose updates are in ``summed`` (or ``secure``), with their metrics.
        secure: the outcome of the secure aggregation the backend ran with the clients (a
            deployment's), which the strategy's secure aggregate step takes in place of
            the updates; None where the clients' inputs come back as updates.
        traffic: ``client -> (download, upload)``: the bytes each client's task and result
            took on the wire, where the backend measures them (a deployment: a client not
            listed was sent nothing); None in simulations, where the round loop counts the
            tensors sent (``run.traffic``).
    """

    updates: list[Update]
    failures: list[ClientFailure]
    client_states: dict[int, TensorGroups] = field(default_factory=dict)
    summed: ExactSum | None = None
    reports: list[ClientReport] = field(default_factory=list)
    secure: MaskedSum | None = None
    traffic: dict[int, tuple[int, int]] | None = None


@dataclass(frozen=True)
class EvalOutcome:
    """Per-client evaluation results, and the clients whose evaluation failed."""

    results: dict[int, EvalResult]
    failures: list[ClientFailure]


@runtime_checkable
class Backend(Protocol):
    """Runs cohorts of client work. Use as a context manager, or call start/close."""

    name: str

    def start(self, env: SimulationEnv) -> None:
        """Prepare to run work for ``env`` (start workers, load data)."""
        ...

    def fit(self, cohort: Cohort) -> FitOutcome:
        """Train every client of the cohort; failures are returned, not raised."""
        ...

    def evaluate(self, client_ids: Sequence[int], params: Params) -> EvalOutcome:
        """Evaluate ``params`` on each client's local test split."""
        ...

    def close(self) -> None:
        """Release workers and resources; safe to call twice."""
        ...


@runtime_checkable
class CentralEvaluator(Protocol):
    """A backend that evaluates shards of its federation's central test set itself (every
    simulation backend; see :mod:`sheaf.evaluation.central`). The round loop evaluates in
    its own process where the backend is not one (deployment)."""

    def evaluate_central(self, params: Params, shards: Sequence[range]) -> list[EvalResult]:
        """Evaluate ``params`` on each shard (rows of the central test set), in shard order.

        Raises:
            SheafError: whatever the task raises evaluating a shard (as in this process).
        """
        ...


class BackendBase:
    """What the simulation backends share: use as a context manager, the started environment,
    and central evaluation in this process (backends with workers spread it over them).

    Subclasses set ``_env`` in ``start`` and implement ``close``.
    """

    _env: SimulationEnv | None = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release workers and resources (subclasses override; safe to call twice)."""

    def evaluate_central(self, params: Params, shards: Sequence[range]) -> list[EvalResult]:
        """Evaluate ``params`` on each shard of the federation's central test set, in turn, here."""
        env = self.env
        return evaluate_shards(env.task, params, env.federation.central_test, shards)

    @property
    def env(self) -> SimulationEnv:
        """The environment given to ``start``.

        Raises:
            BackendError: if the backend has not been started.
        """
        if self._env is None:
            raise BackendError("backend not started; call start(env) first")
        return self._env
