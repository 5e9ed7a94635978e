"""Parts of the fmnist-eval round measured one by one, as JSON (issue 14's profile).

    python benchmarks/round_parts.py

- ``norms``: ``Params.l2_norm`` (one BLAS thread, the two-core split) against numpy's plain
  ``dot`` (as many OpenBLAS threads as cores) on 120 random float32 models, wall seconds in
  this process, and how many norms differ in their bits (0 on two cores).
- ``evaluation``: CPU seconds of sheaf's central evaluation of the 10,000 Fashion-MNIST
  test images (10 shards of 1,000 rows, one torch thread) at several batch sizes, and of
  the plain loop's evaluation (``benchmarks/engine.py``), the best of three each.
- ``training``: CPU seconds a round of the plain loop's training alone (3 rounds).
- ``schedule``: how much longer than a perfect split over two workers the fit phase of
  rounds 1-8 takes with the scheduler's chunks, clients in cohort order or the most
  training rows first (cost of a client: its rows + 30, a fixed cost per client).

Every figure comes with ``os.getloadavg()``: the machine these ran on is shared.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(__file__))

from engine import FMNIST_EVAL, fmnist_cnn, plain_evaluation, plain_loop

from sheaf.backends._collect import largest_first
from sheaf.backends._scheduler import MAX_CHUNK, chunk_size
from sheaf.core.config import DataConfig
from sheaf.core.params import Params
from sheaf.data.catalog import build_federation
from sheaf.evaluation.central import central_shards, evaluate_shards
from sheaf.run.population import Population
from sheaf.task import TorchTask


def _load() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


def _plain_norm(params: Params) -> float:
    return float(np.sqrt(sum(float(np.dot(v.ravel(), v.ravel())) for v in params.astype(np.float64).values())))


def norms() -> dict[str, Any]:
    rng = np.random.default_rng(2)
    models = [
        Params(
            {
                "a": rng.standard_normal(n).astype(np.float32),
                "conv": rng.standard_normal((32, 16, 5, 5)).astype(np.float32),
                "b": rng.standard_normal(7).astype(np.float32),
            }
        )
        for n in (5, 10_000, 10_001, 12_800, 99_999, 1_000_001)
        for _ in range(20)
    ]
    load = _load()
    started = time.perf_counter()
    plain = [_plain_norm(p) for p in models]
    plain_s = time.perf_counter() - started
    started = time.perf_counter()
    ours = [p.l2_norm() for p in models]
    ours_s = time.perf_counter() - started
    return {
        "part": "norms",
        "models": len(models),
        "numpy_dot_s": round(plain_s, 4),
        "l2_norm_s": round(ours_s, 4),
        "bits_differ": sum(a != b for a, b in zip(plain, ours, strict=True)),
        "blas_threads_default": os.cpu_count(),
        "load_before": load,
    }


def _best_cpu(run: Callable[[], object], tries: int = 3) -> float:
    best = float("inf")
    for _ in range(tries):
        started = time.process_time()
        run()
        best = min(best, time.process_time() - started)
    return round(best, 3)


def evaluation(federation: Any) -> list[dict[str, Any]]:
    torch.set_num_threads(1)
    task = TorchTask(fmnist_cnn)
    params = task.init_params(0)
    test = federation.central_test
    shards = central_shards(len(test), 1000)
    rows = []
    for batch in (None, 128, 512, 1000):
        task.eval_batch_size = batch
        load = _load()
        cpu = _best_cpu(lambda: evaluate_shards(task, params, test, shards))
        rows.append(
            {"part": "evaluation", "who": "sheaf", "batch": batch or "default (256)", "cpu_s": cpu, "load_before": load}
        )
    model = fmnist_cnn()
    load = _load()
    cpu = _best_cpu(lambda: plain_evaluation(model, test))
    rows.append({"part": "evaluation", "who": "plain loop", "batch": 1000, "cpu_s": cpu, "load_before": load})
    return rows


def training(federation: Any, rounds: int = 3) -> dict[str, Any]:
    """CPU seconds a round of the plain loop's training (no evaluation), one torch thread."""
    load = _load()
    started = time.process_time()
    plain_loop(federation, fmnist_cnn, FMNIST_EVAL, rounds)
    return {
        "part": "training",
        "who": "plain loop",
        "rounds": rounds,
        "cpu_s_per_round": round((time.process_time() - started) / rounds, 3),
        "load_before": load,
    }


def _makespan(order: Sequence[int], cost: Callable[[int], float], workers: int = 2) -> float:
    """The scheduler's chunks on ``workers`` equal workers; a worker takes the next chunk when it is free."""
    waiting, ends = list(order), [0.0] * workers
    while waiting:
        worker = min(range(workers), key=lambda i: ends[i])
        size = max(1, min(MAX_CHUNK, len(waiting), chunk_size(len(waiting), workers)))
        chunk, waiting = waiting[:size], waiting[size:]
        ends[worker] += sum(cost(c) for c in chunk)
    return max(ends)


def schedule(federation: Any, rounds: int = 8) -> dict[str, Any]:
    population = Population.of(federation)
    counts = federation.train_counts
    cohort_order, longest_first, ideal = 0.0, 0.0, 0.0
    for number in range(1, rounds + 1):
        ids = [int(c) for c in population.cohort(10, seed=0, round=number)]

        def cost(client: int) -> float:
            return float(counts[client]) + 30.0

        cohort_order += _makespan(ids, cost)
        longest_first += _makespan(largest_first(ids, counts), cost)
        ideal += sum(cost(c) for c in ids) / 2
    return {
        "part": "schedule",
        "rounds": rounds,
        "fit_over_perfect_split_cohort_order": round(cohort_order / ideal, 4),
        "fit_over_perfect_split_longest_first": round(longest_first / ideal, 4),
    }


def main() -> None:
    federation = build_federation(DataConfig(dataset="fashion_mnist", clients=100, alpha=0.5), seed=0)
    report = {
        "command": " ".join(["python", "benchmarks/round_parts.py", *sys.argv[1:]]),
        "cores": len(os.sched_getaffinity(0)),
        "torch": torch.__version__,
        "results": [norms(), *evaluation(federation), training(federation), schedule(federation)],
    }
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
