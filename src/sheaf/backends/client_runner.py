"""The client side of a round, written once: train or evaluate one client, package the outcome.

Every place where a client's work runs goes through a :class:`ClientRunner`: the inline
backend (and the vectorized backend's fallback) in this process, pool workers and Ray
actors behind their messages, and a deployed ``sheaf client`` process. It

- trains with :func:`~sheaf.task.client.fit_client` — the task through the round's client
  steps, with the client's own seed derived from (run seed, round, client id) — so a client
  computes the same bits wherever it runs;
- turns anything that goes wrong in user code into that client's
  :class:`~sheaf.core.errors.ClientFailure` value (a dropout), never an exception;
- where updates are added up as they arrive (``RoundWork.rule`` is set), applies the run's
  one acceptance rule (:class:`~sheaf.core.acceptance.UpdateRule`) before the update may
  join a sum, with the words the round loop uses for a whole update.

Example:
    >>> import numpy as np
    >>> from sheaf.core.config import TrainConfig
    >>> from sheaf.core.params import Params
    >>> from sheaf.data.dataset import ClientData, Split
    >>> from sheaf.task.base import FitResult
    >>> class Mean:
    ...     def init_params(self, seed): return Params({"w": np.zeros(1)})
    ...     def fit(self, params, data, instructions): return FitResult(Params({"w": data.x.mean(axis=0)}), len(data))
    ...     def evaluate(self, params, data): ...
    >>> data = ClientData(4, Split(np.full((2, 1), 3.0), np.zeros(2)), Split(np.zeros((0, 1)), np.zeros(0)))
    >>> reply = ClientRunner(Mean(), seed=0).fit(data, RoundWork(1, Params({"w": np.zeros(1)}), TrainConfig()))
    >>> reply.update.delta["w"].tolist(), reply.failure
    ([3.0], None)
"""

from __future__ import annotations

from dataclasses import dataclass

from sheaf.backends.base import RoundWork
from sheaf.core.errors import ClientFailure, SheafError
from sheaf.core.params import Params
from sheaf.core.update import TensorGroups, Update
from sheaf.data.dataset import ClientData
from sheaf.task.base import EvalResult, Task
from sheaf.task.client import evaluate_client, fit_client

__all__ = ["ClientRunner", "FitReply"]


@dataclass(frozen=True)
class FitReply:
    """One client's outcome of a training round.

    Attributes:
        client_id: the client.
        update: its update (None if it failed).
        state: its new persistent state (None: unchanged, or it failed).
        failure: why it failed (None if it did not).
        norm: the L2 norm of its delta (NaN if it failed).
    """

    client_id: int
    update: Update | None
    state: TensorGroups | None = None
    failure: ClientFailure | None = None
    norm: float = float("nan")


class ClientRunner:
    """Runs clients' work with one task instance (see the module docstring).

    Args:
        task: the user's task (already set up for this process).
        seed: the run seed.
    """

    def __init__(self, task: Task, seed: int) -> None:
        self.task = task
        self.seed = seed

    def fit(
        self, data: ClientData, work: RoundWork, state: TensorGroups | None = None, *, seed: int | None = None
    ) -> FitReply:
        """Train one client for the round; a failure is returned, not raised.

        ``seed`` is the client's own training seed for the round when it was derived
        elsewhere (a deployed client is sent it); by default it is derived from the run seed.
        """
        client = data.client_id
        try:
            update, new_state = fit_client(
                self.task,
                data,
                work.params,
                round=work.round,
                train=work.train,
                run_seed=self.seed,
                options=work.options,
                payload=work.payload,
                client_state=state,
                steps=work.steps,
                seed=seed,
            )
        except ClientFailure as failure:
            return FitReply(client, None, failure=failure)
        if work.rule is not None:
            try:
                work.rule.check(update, work.params)
            except SheafError as exc:  # the words the round loop uses for a whole update
                return FitReply(client, None, failure=ClientFailure(client, f"update rejected: {exc}"))
        return FitReply(client, update, new_state, norm=update.delta.l2_norm())

    def evaluate(self, data: ClientData, params: Params) -> EvalResult | ClientFailure:
        """Evaluate ``params`` on the client's local test split; a failure is returned, not raised."""
        try:
            return evaluate_client(self.task, data, params)
        except ClientFailure as failure:
            return failure
