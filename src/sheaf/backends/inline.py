"""InlineBackend: every client in turn, in this process.

The reference backend: simplest, no start-up cost, and the one every other backend must
match bit for bit.

Example:
    >>> InlineBackend().name
    'inline'
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from sheaf.backends._allocator import tune_allocator
from sheaf.backends.base import BackendBase, Cohort, EvalOutcome, FitOutcome, SimulationEnv
from sheaf.backends.client_runner import ClientRunner
from sheaf.core.errors import ClientFailure
from sheaf.core.params import Params
from sheaf.core.update import TensorGroups, Update
from sheaf.task.base import EvalResult, prepare_worker

__all__ = ["InlineBackend"]


class InlineBackend(BackendBase):
    """Runs clients one after another in the calling process."""

    name = "inline"

    def __init__(self) -> None:
        self._env: SimulationEnv | None = None
        self._runner: ClientRunner | None = None

    def start(self, env: SimulationEnv) -> None:
        """Remember the environment, fix the task's thread count and device, and tune the allocator."""
        prepare_worker(env.task, env.threads, env.device)
        tune_allocator()
        self._env = env
        self._runner = ClientRunner(env.task, env.seed)

    def _client_runner(self) -> ClientRunner:
        env = self.env  # raises if not started
        return self._runner or ClientRunner(env.task, env.seed)

    def fit(self, cohort: Cohort) -> FitOutcome:
        """Train the cohort's clients in increasing id order (whole updates: the loop checks them)."""
        federation, runner = self.env.federation, self._client_runner()
        work = cohort.work
        if work.rule is not None:  # nothing is summed here: the round loop checks each update
            work = dataclasses.replace(work, rule=None)
        updates: list[Update] = []
        failures: list[ClientFailure] = []
        states: dict[int, TensorGroups] = {}
        for client_id in cohort.client_ids:
            reply = runner.fit(federation.client(client_id), work, cohort.client_states.get(client_id))
            if reply.update is None:
                assert reply.failure is not None
                failures.append(reply.failure)
                continue
            updates.append(reply.update)
            if reply.state is not None:
                states[client_id] = reply.state
        return FitOutcome(updates, failures, states)

    def evaluate(self, client_ids: Sequence[int], params: Params) -> EvalOutcome:
        """Evaluate each client's local test split in turn."""
        federation, runner = self.env.federation, self._client_runner()
        results: dict[int, EvalResult] = {}
        failures: list[ClientFailure] = []
        for client_id in client_ids:
            outcome = runner.evaluate(federation.client(client_id), params)
            if isinstance(outcome, ClientFailure):
                failures.append(outcome)
            else:
                results[client_id] = outcome
        return EvalOutcome(results, failures)

    def close(self) -> None:
        """Forget the environment."""
        self._env = None
        self._runner = None
