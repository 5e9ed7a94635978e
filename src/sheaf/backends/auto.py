"""AutoBackend (the default): picks the backend that suits the task, and says which and why.

1. ``vectorized`` when the task can be vectorised (a plain TorchTask, see
   :func:`~sheaf.backends.vectorized.vectorize_reason`), its model is small — at most
   :data:`~sheaf.backends.vectorized.SMALL_FLOPS` floating-point operations per sample in the
   forward pass — and a round has at least :data:`MIN_COHORT` clients: then one batched step
   for the whole cohort beats many tiny per-client steps. Bigger models are already
   efficient per client;
2. ``pool`` when at least two workers fit the cores, the task can be sent to a worker
   process, and a round has enough training to be worth spreading (for a TorchTask, an
   estimated :data:`POOL_MIN_FLOPS` or more; other tasks are assumed to have);
3. ``inline`` otherwise.

The choice depends only on the task, the data, the cohort size and the machine's core
count, never on timings, so the same config and seed give the same model every time on a
machine. Inline and pool give bit-identical models; vectorized agrees with them to float32
rounding.

Example:
    >>> AutoBackend().name
    'auto'
"""

from __future__ import annotations

import logging
import pickle
from collections.abc import Sequence

from sheaf.backends.base import (
    Backend,
    BackendBase,
    CentralEvaluator,
    Cohort,
    EvalOutcome,
    FitOutcome,
    SimulationEnv,
)
from sheaf.backends.inline import InlineBackend
from sheaf.backends.pool import PoolBackend, default_workers
from sheaf.backends.vectorized import SMALL_FLOPS, VectorizedBackend, forward_flops, vectorize_reason
from sheaf.core.errors import BackendError
from sheaf.core.params import Params
from sheaf.task.base import EvalResult

__all__ = ["MIN_COHORT", "POOL_MIN_FLOPS", "AutoBackend", "describe_backend"]

#: Fewer clients per round than this are not worth a vectorized step (its fixed cost is a
#: few small steps' worth).
MIN_COHORT = 8

#: A round with less training than this (FLOPs, estimated) runs inline: spreading it over
#: worker processes costs more than it saves.
POOL_MIN_FLOPS = 2e8

logger = logging.getLogger("sheaf.backends")


class AutoBackend(BackendBase):
    """Chooses vectorized, pool or inline at start (see the module docstring).

    Attributes:
        chosen: the backend that runs the work (after :meth:`start`).
        reason: why it was chosen, in words.
    """

    name = "auto"

    def __init__(self) -> None:
        self.chosen: Backend | None = None
        self.reason = ""

    @property
    def backend(self) -> Backend:
        if self.chosen is None:
            raise BackendError("backend not started; call start(env) first")
        return self.chosen

    def _pool_reason(self, env: SimulationEnv) -> str | None:
        workers = env.engine.workers or default_workers(env.threads, env.device)
        if workers < 2:
            return f"only {workers} worker would fit this machine's cores"
        try:
            pickle.dumps((env.task, env.client_steps))
        except Exception as exc:
            return f"the task or its client steps cannot be sent to worker processes ({type(exc).__name__}: {exc})"
        return None

    def _fallback(self, env: SimulationEnv) -> Backend:
        """What the vectorized backend hands unvectorisable cohorts to."""
        return PoolBackend() if self._pool_reason(env) is None else InlineBackend()

    def start(self, env: SimulationEnv) -> None:
        """Choose, start the chosen backend and log the choice."""
        # What can be seen first; the trial step under vmap (a second or two the first time)
        # only for a model that is small enough to be vectorised at all.
        not_vectorized = vectorize_reason(env.task)
        work = None  # training FLOPs per round, where they can be estimated
        if not_vectorized is None:
            flops = forward_flops(env.task, env.federation.x[:1])
            if env.cohort_size:
                rows = float(env.federation.train_counts.mean()) * env.cohort_size
                work = 3 * flops * rows  # forward and backward, one epoch
            if flops > SMALL_FLOPS:
                not_vectorized = f"the model is not small ({flops:,} FLOPs per sample > {SMALL_FLOPS:,})"
            elif 0 < env.cohort_size < MIN_COHORT:
                not_vectorized = f"{env.cohort_size} clients per round are too few to batch (fewer than {MIN_COHORT})"
            elif (trial := vectorize_reason(env.task, env.federation)) is not None:
                not_vectorized = trial
            else:
                self.chosen = VectorizedBackend(fallback=lambda: self._fallback(env))
                self.reason = f"a TorchTask with the standard loop and a small model ({flops:,} FLOPs per sample)"
        if self.chosen is None:
            not_pool = self._pool_reason(env)
            if not_pool is None and work is not None and work < POOL_MIN_FLOPS:
                not_pool = f"a round is about {work / 1e6:,.0f} MFLOP of training, too little to spread over processes"
            if not_pool is None:
                self.chosen = PoolBackend()
                self.reason = f"{not_vectorized}; {env.engine.workers or default_workers(env.threads, env.device)} cores for workers"
            else:
                self.chosen = InlineBackend()
                self.reason = f"{not_vectorized}; {not_pool}"
        try:
            self.chosen.start(env)
        except BackendError as exc:
            if isinstance(self.chosen, InlineBackend):
                raise
            failed, self.chosen = self.chosen.name, InlineBackend()
            self.reason = f"the {failed} backend could not start ({exc})"
            self.chosen.start(env)
        logger.info("sheaf auto: using the %s backend: %s", self.chosen.name, self.reason)

    def fit(self, cohort: Cohort) -> FitOutcome:
        """Train the cohort with the chosen backend."""
        return self.backend.fit(cohort)

    def evaluate(self, client_ids: Sequence[int], params: Params) -> EvalOutcome:
        """Evaluate with the chosen backend."""
        return self.backend.evaluate(client_ids, params)

    def evaluate_central(self, params: Params, shards: Sequence[range]) -> list[EvalResult]:
        """Central evaluation with the chosen backend (in its workers, if it has any)."""
        if isinstance(self.backend, CentralEvaluator):
            return self.backend.evaluate_central(params, shards)
        return super().evaluate_central(params, shards)

    def close(self) -> None:
        """Close the chosen backend (safe to call twice)."""
        if self.chosen is not None:
            self.chosen.close()
            self.chosen = None


def describe_backend(backend: Backend) -> tuple[str, str]:
    """The backend that really runs the work, and why (for logs, progress and the run store).

    Pool and Ray add how many workers run, with how many torch threads each.
    """
    reason = "as configured"
    runs = backend
    if isinstance(backend, AutoBackend) and backend.chosen is not None:
        runs, reason = backend.chosen, backend.reason
    if isinstance(runs, VectorizedBackend) and runs.reason is not None:
        reason = f"falls back to one client at a time: {runs.reason}"
    elif isinstance(runs, VectorizedBackend) and not runs.batched:
        step = "each step's forward and backward passes run client after client (the model is not small)"
        reason = step if reason == "as configured" else f"{reason}; {step}"
    workers = getattr(runs, "running", 0)
    if workers:
        threads = getattr(runs, "threads", 1)
        size = f"{workers} workers x {threads} torch thread{'s' if threads > 1 else ''}"
        reason = size if reason == "as configured" else f"{reason}; {size}"
    return runs.name, reason
