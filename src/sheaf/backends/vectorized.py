"""VectorizedBackend: trains every client of a cohort at once with ``torch.func.vmap``.

For a :class:`~sheaf.task.torch_task.TorchTask` with the standard loop (sheaf's SGD,
momentum or Adam, fixed epochs and batch size, FedProx's proximal term), the clients'
parameters and optimiser state are stacked and trained together — one batched step for
the whole cohort instead of one small step per client — in chunks of clients that fit
``engine.memory_mb``. On small models this beats a hand-written loop several times over
(see ``docs/backends.md``). Results match TorchTask's to float32 rounding (batched matrix
products add in another order); the same config and seed give the same model every time.

What it cannot vectorise it hands to a fallback backend (inline by default), saying why
once: a task that is not a plain TorchTask (its own ``train_fn``, ``optimizer_fn`` or
class), a model with buffers (batch-norm) or random layers (dropout), a model that fails
under ``vmap``, and cohorts whose strategy sends tensors (``payload``), options the loop
does not know, or per-client state. Federated evaluation runs one batched forward pass
over many clients' test rows, then each client's loss and metrics as TorchTask computes
them.

Example:
    >>> backend = VectorizedBackend()
    >>> backend.name
    'vectorized'
"""

from __future__ import annotations

import dataclasses
import logging
import math
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from sheaf.backends._allocator import tune_allocator
from sheaf.backends.base import (
    Backend,
    BackendBase,
    CentralEvaluator,
    ClientReport,
    Cohort,
    EvalOutcome,
    FitOutcome,
    SimulationEnv,
)
from sheaf.backends.inline import InlineBackend
from sheaf.core.errors import ClientFailure, SheafError
from sheaf.core.exactsum import ExactSum
from sheaf.core.params import Params
from sheaf.core.rng import Purpose, seeds_for
from sheaf.core.update import Update
from sheaf.data.dataset import ClientData, Federation, Split
from sheaf.task.base import EvalResult, Task, prepare_worker
from sheaf.task.client import evaluate_client
from sheaf.task.device import process_device

if TYPE_CHECKING:
    from sheaf.backends._vmap import ChunkResult, VectorTrainer

__all__ = ["SMALL_FLOPS", "VectorizedBackend", "forward_flops", "vectorize_reason"]

logger = logging.getLogger("sheaf.backends")

_EVAL_ROWS = 1 << 16  # rows of test data per batched evaluation pass

#: Models with at most this many forward FLOPs per sample run all clients' forward and
#: backward passes as one ``vmap`` call; bigger ones run them client after client inside
#: each stacked step (batched convolutions become grouped ones, slower on CPUs).
SMALL_FLOPS = 1_000_000


def forward_flops(task: Task, sample: np.ndarray[Any, Any]) -> int:
    """Floating-point operations of one sample's forward pass of a TorchTask's model, as torch's
    ``FlopCounterMode`` counts them (:mod:`sheaf.backends._flops`)."""
    from sheaf.backends._flops import forward_flops as count  # imports torch

    return count(task, sample)


def vectorize_reason(task: Task, federation: Federation | None = None) -> str | None:
    """Why the vectorized backend cannot train ``task`` (None: it can).

    Checks what can be seen (a plain TorchTask, no buffers, untied parameters) and, given a
    federation, tries one tiny vectorized step on two of its rows (random layers such as
    dropout, or operations ``vmap`` does not support, fail there).
    """
    if "sheaf.task.torch_task" not in sys.modules:  # then it cannot be a TorchTask: no torch import
        return f"the task is a {type(task).__name__}, not a TorchTask"
    from sheaf.backends._vmap import VectorTrainer, static_reason

    reason = static_reason(task)
    if reason is not None or federation is None or len(federation.y) == 0:
        return reason
    from sheaf.core.config import TrainConfig

    try:
        trainer = VectorTrainer(task, device=process_device())  # type: ignore[arg-type]
        x, y = federation.x[:2], federation.y[:2]
        trainer.train(task.init_params(0), x, y, [0, 0], [len(y)] * 2, [1, 2], TrainConfig(epochs=1, batch_size=2), 0.0)
    except Exception as exc:
        return f"the model cannot be trained under torch.func.vmap ({type(exc).__name__}: {exc})"
    return None


def _inline(env: SimulationEnv) -> InlineBackend:
    backend = InlineBackend()
    backend.start(env)
    return backend


class _Precomputed:
    """A stand-in task whose evaluation was computed in a batch (for evaluate_client's checks)."""

    def __init__(self, result: EvalResult | Exception) -> None:
        self.result = result

    def evaluate(self, params: Params, data: Split) -> EvalResult:
        if isinstance(self.result, Exception):
            raise self.result
        return self.result


class VectorizedBackend(BackendBase):
    """Trains the cohort's clients together (see the module docstring).

    Args:
        memory_mb: memory for one chunk of clients; None takes ``engine.memory_mb``.
        fallback: builds the backend for what cannot be vectorised (default: inline).
    """

    name = "vectorized"

    def __init__(self, memory_mb: int | None = None, fallback: Callable[[], Backend] | None = None) -> None:
        self._memory_mb = memory_mb
        self._fallback_factory: Callable[[], Backend] = fallback or InlineBackend
        self._fallback: Backend | None = None
        self._env: SimulationEnv | None = None
        self._trainer: VectorTrainer | None = None
        self._said: set[str] = set()
        #: Why the whole task is not vectorised (None when it is).
        self.reason: str | None = None
        #: Whether each step's forward and backward passes are one vmap call (small models).
        self.batched = True
        self._per_client = 0
        self._act_bytes = 0

    def _say(self, reason: str) -> None:
        # Once per kind of reason (the text before any parenthesised detail): a strategy
        # whose options vary between training and personalised evaluation is said once.
        kind = reason.split(" (", 1)[0]
        if kind not in self._said:
            self._said.add(kind)
            logger.warning("sheaf vectorized: %s; those clients train one by one instead", reason)

    def _fallback_backend(self) -> Backend:
        if self._fallback is None:
            self._fallback = self._fallback_factory()
            self._fallback.start(self.env)
        return self._fallback

    def start(self, env: SimulationEnv) -> None:
        """Check that the task can be vectorised (else start the fallback, saying why)."""
        self._env = env
        prepare_worker(env.task, env.threads, env.device)
        tune_allocator()
        self.reason = vectorize_reason(env.task, env.federation)
        if self.reason is not None:
            self._say(f"cannot vectorise this task: {self.reason}")
            self._fallback_backend()
            return
        from sheaf.backends._vmap import VectorTrainer

        self.batched = len(env.federation.x) == 0 or forward_flops(env.task, env.federation.x[:1]) <= SMALL_FLOPS
        self._trainer = VectorTrainer(env.task, self.batched, process_device())  # type: ignore[arg-type]
        sample = env.federation.x[:1]
        self._act_bytes = self._trainer.activation_bytes(sample) if len(sample) else 0
        self._per_client = sum(p.numel() * p.element_size() for p in self._trainer.model.parameters())

    def close(self) -> None:
        """Release the fallback backend, if one started."""
        if self._fallback is not None:
            self._fallback.close()
            self._fallback = None
        self._trainer = None
        self._env = None

    # Training --------------------------------------------------------------------------------
    def _cohort_reason(self, cohort: Cohort) -> str | None:
        if cohort.steps:
            return f"the strategy's clients run client steps ({', '.join(s.name for s in cohort.steps)})"
        if cohort.payload:
            return f"the strategy sends tensors to its clients ({', '.join(sorted(cohort.payload))})"
        from sheaf.backends._vmap import KNOWN_OPTIONS

        # The strategy's reasons first: they hold every round, so they are said once.
        unknown = sorted(set(cohort.options) - KNOWN_OPTIONS)
        if unknown:
            return f"the strategy sends options the vectorized loop does not implement ({', '.join(unknown)})"
        if cohort.client_states:
            return "clients carry persistent state from round to round"
        return None

    def _chunk_size(self, cohort: Cohort) -> int:
        budget = (self._memory_mb or self.env.engine.memory_mb) * 2**20
        x = self.env.federation.x
        sample_bytes = x.itemsize * int(np.prod(x.shape[1:], dtype=np.int64))
        # parameters, gradients, two optimiser buffers and a copy; a batch; activations
        batch = cohort.train.batch_size
        need = 5 * self._per_client + batch * sample_bytes + 3 * batch * self._act_bytes
        return max(1, budget // max(1, need))

    def fit(self, cohort: Cohort) -> FitOutcome:
        """Train the cohort's clients together (or hand the cohort to the fallback)."""
        reason = self.reason or self._cohort_reason(cohort)
        if reason is not None or self._trainer is None:
            if self.reason is None and reason is not None:
                self._say(reason)
            return self._fallback_backend().fit(cohort)
        env = self.env
        fed = env.federation
        sizes = {int(c): int(fed.train_counts[int(c)]) for c in cohort.client_ids}
        batches = {c: math.ceil(n / cohort.train.batch_size) for c, n in sizes.items()}
        busy = sorted((c for c in sizes if batches[c] > 0), key=lambda c: (-batches[c], c))
        size = self._chunk_size(cohort)
        outcome = _Assembly(cohort)
        for c in sizes:
            if batches[c] == 0:  # TorchTask's loop: nothing to train on, params unchanged
                outcome.add_one(c, cohort.params, 0, {"train_loss": float("nan"), "steps": 0.0})
        for start in range(0, len(busy), size):
            chunk = busy[start : start + size]
            try:
                result = self._trainer.train(
                    cohort.params,
                    fed.x,
                    fed.y,
                    [int(fed.offsets[c]) for c in chunk],
                    [sizes[c] for c in chunk],
                    seeds_for(env.seed, Purpose.FIT, round=cohort.round, clients=chunk),
                    cohort.train,
                    float(cohort.options.get("proximal_mu", 0.0)),
                )
            except Exception as exc:  # e.g. a client's data the model cannot take: per client, inline
                self._say(f"vectorized training failed ({type(exc).__name__}: {exc})")
                outcome.take(_inline(env).fit(dataclasses.replace(cohort, client_ids=chunk, reduce=False)))
                continue
            outcome.add_chunk(chunk, result, [sizes[c] for c in chunk])
        return outcome.outcome()

    # Evaluation ------------------------------------------------------------------------------
    def evaluate_central(self, params: Params, shards: Sequence[range]) -> list[EvalResult]:
        """Central evaluation with the task, shard by shard: here, or in the fallback's workers
        when the whole task runs there (the same bits either way)."""
        if self.reason is not None and isinstance(self._fallback, CentralEvaluator):
            return self._fallback.evaluate_central(params, shards)
        return super().evaluate_central(params, shards)

    def evaluate(self, client_ids: Sequence[int], params: Params) -> EvalOutcome:
        """Evaluate with one batched forward pass over many clients' test rows."""
        if self._trainer is None:
            return self._fallback_backend().evaluate(client_ids, params)
        env = self.env
        try:
            self._trainer.load(params)
        except Exception:  # wrong names or shapes: let each client fail as TorchTask would
            return _inline(env).evaluate(client_ids, params)
        results: dict[int, EvalResult] = {}
        failures: list[ClientFailure] = []
        group: list[ClientData] = []
        rows = 0
        for client in [*client_ids, None]:
            if client is not None:
                data = env.federation.client(int(client))
                group.append(data)
                rows += len(data.test)
            if group and (client is None or rows >= _EVAL_ROWS):
                self._evaluate_group(group, params, results, failures)
                group, rows = [], 0
        return EvalOutcome(results, failures)

    def _evaluate_group(
        self, group: list[ClientData], params: Params, results: dict[int, EvalResult], failures: list[ClientFailure]
    ) -> None:
        import torch

        assert self._trainer is not None
        task: Any = self.env.task
        sizes = [len(d.test) for d in group]
        outputs: torch.Tensor | Exception
        try:
            outputs = self._trainer.outputs(np.concatenate([d.test.x for d in group]))
        except Exception as exc:
            outputs = exc
        offset = 0
        for data, n in zip(group, sizes, strict=True):
            result: EvalResult | Exception
            if isinstance(outputs, Exception):
                result = outputs
            elif n == 0:
                result = EvalResult(float("nan"), 0, {name: float("nan") for name in task.metrics})
            else:
                try:
                    out = outputs[offset : offset + n]
                    y = torch.from_numpy(np.array(data.test.y))
                    with torch.no_grad():
                        result = EvalResult(
                            float(task.loss_fn(out, y)), n, {name: fn(out, y) for name, fn in task.metrics.items()}
                        )
                except Exception as exc:
                    result = exc
            offset += n
            try:
                results[data.client_id] = evaluate_client(_Precomputed(result), data, params)  # type: ignore[arg-type]
            except ClientFailure as failure:
                failures.append(failure)


class _Assembly:
    """Builds a cohort's FitOutcome from trained chunks, as the inline backend would."""

    def __init__(self, cohort: Cohort) -> None:
        self.cohort = cohort
        self.exact = ExactSum(cohort.params) if cohort.reduce else None
        self.updates: list[Update] = []
        self.reports: list[ClientReport] = []
        self.failures: list[ClientFailure] = []

    def add_one(self, client: int, trained: Mapping[str, Any], n: int, metrics: dict[str, float]) -> None:
        self.add_update(Update.from_params(client, self.cohort.params, Params(trained), n, metrics))

    def add_update(self, update: Update) -> None:
        if self.exact is None:
            self.updates.append(update)
            return
        try:
            self.cohort.rule.check(update, self.cohort.params)
        except SheafError as exc:  # the round loop's words for a rejected update
            self.failures.append(ClientFailure(update.client_id, f"update rejected: {exc}"))
            return
        self.exact.add(update.delta, update.num_examples)
        norm = update.delta.l2_norm()
        self.reports.append(ClientReport(update.client_id, update.num_examples, dict(update.metrics), norm))

    def add_chunk(self, clients: list[int], result: ChunkResult, sizes: list[int]) -> None:
        import torch

        deltas = {
            name: (result.params[name].cpu() - torch.from_numpy(np.array(like))).numpy()
            for name, like in self.cohort.params.items()
        }
        metrics = [
            {"train_loss": float(loss), "steps": float(steps)}
            for loss, steps in zip(result.train_loss, result.steps, strict=True)
        ]
        if self.exact is not None:
            # Results are promised to float32 rounding, so the chunk's weighted sum is taken in
            # float64 in a fixed order (a tenth of an exact sum's cost) and then added exactly.
            counts = np.asarray(sizes, dtype=np.float64)
            totals = {
                name: np.multiply(d, counts.reshape((-1,) + (1,) * (d.ndim - 1)), dtype=np.float64).sum(axis=0)
                for name, d in deltas.items()
            }
            norms = np.sqrt(
                sum((d.astype(np.float64) ** 2).reshape(len(clients), -1).sum(axis=1) for d in deltas.values())
            )
            rule = self.cohort.rule
            fits = all(norm <= rule.max_norm and n <= rule.weight_cap(c) for c, n, norm in zip(clients, sizes, norms))
            if fits and all(bool(np.isfinite(t).all()) for t in totals.values()):  # then every client's delta is
                self.exact.add_total(totals, int(sum(sizes)), len(clients))
                self.reports += [
                    ClientReport(c, n, m, float(norm))
                    for c, n, m, norm in zip(clients, sizes, metrics, norms, strict=True)
                ]
                return
        for row, client in enumerate(clients):
            row_delta = Params({name: deltas[name][row].copy() for name in deltas})
            self.add_update(Update(client, row_delta, sizes[row], metrics[row]))

    def take(self, outcome: FitOutcome) -> None:
        self.updates += outcome.updates
        self.failures += outcome.failures

    def outcome(self) -> FitOutcome:
        return FitOutcome(
            sorted(self.updates, key=lambda u: u.client_id),
            sorted(self.failures, key=lambda f: f.client_id),
            summed=self.exact,
            reports=sorted(self.reports, key=lambda r: r.client_id),
        )
