"""InlineBackend: every client in turn, in this process.

The reference backend: simplest, no start-up cost, and the one every other backend must
match bit for bit.

Example:
    >>> InlineBackend().name
    'inline'
"""

from __future__ import annotations

from collections.abc import Sequence

from sheaf.backends._allocator import tune_allocator
from sheaf.backends.base import BackendBase, Cohort, EvalOutcome, FitOutcome, SimulationEnv
from sheaf.core.errors import ClientFailure
from sheaf.core.params import Params
from sheaf.core.update import TensorGroups, Update
from sheaf.task.base import EvalResult, prepare_worker
from sheaf.task.client import evaluate_client, fit_client

__all__ = ["InlineBackend"]


class InlineBackend(BackendBase):
    """Runs clients one after another in the calling process."""

    name = "inline"

    def __init__(self) -> None:
        self._env: SimulationEnv | None = None

    def start(self, env: SimulationEnv) -> None:
        """Remember the environment, fix the task's thread count and tune the allocator."""
        prepare_worker(env.task, env.threads)
        tune_allocator()
        self._env = env

    def fit(self, cohort: Cohort) -> FitOutcome:
        """Train the cohort's clients in increasing id order."""
        env = self.env
        updates: list[Update] = []
        failures: list[ClientFailure] = []
        states: dict[int, TensorGroups] = {}
        for client_id in cohort.client_ids:
            try:
                update, state = fit_client(
                    env.task,
                    env.federation.client(client_id),
                    cohort.params,
                    round=cohort.round,
                    train=cohort.train,
                    run_seed=env.seed,
                    options=cohort.options,
                    payload=cohort.payload,
                    client_state=cohort.client_states.get(client_id),
                )
            except ClientFailure as failure:
                failures.append(failure)
                continue
            updates.append(update)
            if state is not None:
                states[client_id] = state
        return FitOutcome(updates, failures, states)

    def evaluate(self, client_ids: Sequence[int], params: Params) -> EvalOutcome:
        """Evaluate each client's local test split in turn."""
        env = self.env
        results: dict[int, EvalResult] = {}
        failures: list[ClientFailure] = []
        for client_id in client_ids:
            try:
                results[client_id] = evaluate_client(env.task, env.federation.client(client_id), params)
            except ClientFailure as failure:
                failures.append(failure)
        return EvalOutcome(results, failures)

    def close(self) -> None:
        """Forget the environment."""
        self._env = None
