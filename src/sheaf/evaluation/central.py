"""Central evaluation in fixed shards, combined exactly: the same bits wherever shards run.

The global model's central evaluation is *defined* shard by shard, so that it can run in
parallel without its result depending on where it ran. The central test set is cut into
fixed shards of ``evaluation.shard_rows`` rows (the last one shorter; ``0``: one shard),
whatever the backend and however many workers it has; the task evaluates each shard on
its own (:func:`evaluate_shards`), and :func:`combine_shards` merges the shards' results
into one: the loss and every metric are the means over the shards weighted by their
examples, computed *exactly* (in rationals) and rounded once to the nearest float.

Why the result does not depend on where shards run: a shard's result is a deterministic
function of the task, the params, the shard's rows and the torch thread count (fixed by
``threads`` in every process); shards are the same rows everywhere; and an exact sum
does not depend on order or grouping, so the combination is the same bits whichever
worker returned which shard and in which order (``tests/evaluation/test_central.py``
states the rule; ``tests/backends/test_central_equivalence.py`` checks it on every backend).

For losses and metrics that are means over rows (cross-entropy, accuracy) the combination
is that mean over the whole test set, up to the last bits of each shard's own float32
mean. A metric that is not a mean over rows (F1, AUC), returned or logged by the task
(``log_metrics``: each shard collects its own), becomes the weighted mean of its per-shard
values: set ``evaluation.shard_rows = 0`` to evaluate it on the whole set at once (in one
process).

Example:
    >>> from sheaf.task.base import EvalResult
    >>> central_shards(2500, 1000)
    [range(0, 1000), range(1000, 2000), range(2000, 2500)]
    >>> combined = combine_shards([EvalResult(0.5, 3, {"accuracy": 1.0}), EvalResult(0.1, 1, {"accuracy": 0.0})])
    >>> combined.loss, combined.num_examples, combined.metrics
    (0.4, 4, {'accuracy': 0.75})
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from fractions import Fraction

from sheaf.core.params import Params
from sheaf.data.dataset import Split
from sheaf.task.base import EvalResult, Task
from sheaf.task.metric_log import collecting, with_logged

__all__ = ["central_shards", "combine_shards", "evaluate_shards", "shard_split"]


def central_shards(rows: int, shard_rows: int) -> list[range]:
    """The fixed shards of a central test set of ``rows`` rows: ``shard_rows`` each (0: one shard).

    A test set without rows is one empty shard, so the task still says what it reports
    for no data.
    """
    if rows <= 0 or shard_rows <= 0 or shard_rows >= rows:
        return [range(max(rows, 0))]
    return [range(start, min(start + shard_rows, rows)) for start in range(0, rows, shard_rows)]


def shard_split(test: Split, shard: range) -> Split:
    """The rows of ``test`` in ``shard``, as views (no copy)."""
    return Split(test.x[shard.start : shard.stop], test.y[shard.start : shard.stop])


def evaluate_shards(task: Task, params: Params, test: Split, shards: Sequence[range]) -> list[EvalResult]:
    """Evaluate ``params`` on each shard of ``test`` in turn, in this process; a shard's
    metrics include those the task logged evaluating it (:func:`sheaf.task.metric_log.log_metrics`)."""
    return [_evaluate_logged(task, params, shard_split(test, shard)) for shard in shards]


def _evaluate_logged(task: Task, params: Params, split: Split) -> EvalResult:
    with collecting() as logged:
        result = task.evaluate(params, split)
    return EvalResult(result.loss, result.num_examples, with_logged(result.metrics, logged))


def _weighted_mean(pairs: Sequence[tuple[float, int]]) -> float:
    """``sum(v * n) / sum(n)``, exactly, rounded once; NaN and infinities propagate as in floats."""
    weight = sum(n for _, n in pairs)
    if weight == 0:
        return math.nan
    if not all(math.isfinite(v) for v, _ in pairs):
        return sum(v * n for v, n in pairs) / weight  # NaN or an infinity: exactness is moot
    return float(sum((Fraction(v) * n for v, n in pairs), Fraction(0)) / weight)


def combine_shards(results: Sequence[EvalResult]) -> EvalResult:
    """One result from the shards' results: example-weighted means, exact and rounded once.

    Shards without examples carry no weight. A metric that some shards do not report is
    the mean over those that do. With a single shard, its result is returned unchanged.
    """
    if len(results) == 1:
        return results[0]
    counted = [r for r in results if r.num_examples > 0]
    names = sorted({name for r in results for name in r.metrics})
    metrics = {
        name: _weighted_mean([(float(r.metrics[name]), r.num_examples) for r in counted if name in r.metrics])
        for name in names
    }
    loss = _weighted_mean([(float(r.loss), r.num_examples) for r in counted])
    return EvalResult(loss, sum(r.num_examples for r in results), metrics)
