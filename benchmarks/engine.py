"""The simulation engine against a plain hand-written loop, as JSON: per scenario and backend.

    python benchmarks/engine.py                      # all three scenarios, every backend
    python benchmarks/engine.py --scenarios digits --rounds 10

Scenarios (the issue's):

- ``digits``: scikit-learn digits over 1,000 IID clients, 50 per round, MLP 64-32-10,
  1 epoch, batch 16. Target: vectorized >= 5x the plain loop.
- ``fmnist``: Fashion-MNIST over 100 Dirichlet(0.5) clients, 10 per round, the small CNN
  ``sheaf.task.models.cnn`` (5x5 conv 16 + max-pool, 5x5 conv 32 + max-pool, linear),
  1 epoch, batch 32. Target: the best backend >= 1.9x the plain loop run with one torch
  thread; none > 1.1x slower.
- ``population``: synthetic logistic regression, 8 samples per client, 100 clients per
  round, at 1,000 / 100,000 / 1,000,000 registered clients, each in a fresh process:
  seconds per round and peak memory — PSS of all the run's processes together (workers,
  forkserver, Ray's own processes), sampled by this process. Target: 1M within 1.5x of 1k;
  all processes <= 2 GB, on every backend.
- ``fmnist-eval``: the ``fmnist`` workload with central evaluation of the 10,000 test
  images every round (lr 0.05), each run in a fresh process started by this one: seconds
  per round (evaluation and store included), peak PSS of all the run's processes
  (workers, forkserver and trackers included; ``benchmarks/_procmem.py``), and start-up
  (from launching the process to the start of round 1: imports, data loading, workers).
  The plain loop and sheaf runs alternate ``--repeats`` times; medians across repeats, the
  load average before and after each run. Target: <= 1.9 s per round, PSS <= 1.76 GB.

The reference is a plain loop with no framework: the same clients, the same numbers of
SGD-with-momentum steps and FedAvg, with torch's autograd and an in-place momentum update
written out by hand. Every sheaf backend runs through ``sheaf.simulate`` (central
evaluation and the SQLite store included in ``round_s``); ``fit_s`` is the time of the
backend's ``fit`` per round (training and, for pool/ray, getting the results back), the
figure the targets use. Medians over the rounds after the first (warm-up).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _procmem import PeakSampler, tree_cpu_s
from torch import nn

from sheaf.backends import Backend, Cohort, EvalOutcome, FitOutcome, SimulationEnv, build_backend, describe_backend
from sheaf.backends.ray_backend import ray_available
from sheaf.core.config import DataConfig
from sheaf.core.params import Params
from sheaf.core.sampling import cohort_size, sample_cohort
from sheaf.data import Federation, Split, build_federation, synthetic_federation
from sheaf.run.simulate import simulate
from sheaf.task.models import cnn, logistic_regression, mlp
from sheaf.task.torch_task import TorchTask


def fmnist_cnn() -> nn.Module:
    """The issue's small CNN (``model=cnn``): two 5x5 convolutions (16, 32 channels) with max-pooling, then linear."""
    return cnn((1, 28, 28), 10)


def digits_mlp() -> nn.Module:
    return mlp(64, (32,), 10)


def population_logreg() -> nn.Module:
    return logistic_regression(16, 2)


class Timed:
    """A backend that times its ``fit`` calls (the engine's share of a round)."""

    def __init__(self, inner: Backend) -> None:
        self.inner = inner
        self.name = inner.name
        self.fit_seconds: list[float] = []
        self.chosen = inner.name
        self.worker_peaks_mb: list[float] = []

    def start(self, env: SimulationEnv) -> None:
        self.inner.start(env)
        self.chosen = describe_backend(self.inner)[0]

    def fit(self, cohort: Cohort) -> FitOutcome:
        started = time.perf_counter()
        outcome = self.inner.fit(cohort)
        self.fit_seconds.append(time.perf_counter() - started)
        return outcome

    def evaluate(self, client_ids: Sequence[int], params: Params) -> EvalOutcome:
        return self.inner.evaluate(client_ids, params)

    def evaluate_central(self, params: Params, shards: Sequence[range]) -> Any:
        return self.inner.evaluate_central(params, shards)  # type: ignore[attr-defined]

    def close(self) -> None:
        # Worker processes are the forkserver's children, not ours: read their peaks now.
        inner = getattr(self.inner, "chosen", None) or self.inner
        self.worker_peaks_mb = [_peak_rss_mb(w.process.pid) for w in getattr(inner, "_workers", [])]
        self.inner.close()


def plain_evaluation(model: nn.Module, test: Split, batch: int = 1000) -> tuple[float, float]:
    """Central evaluation written out by hand: mean loss and accuracy, in batches, one thread."""
    x, y = torch.from_numpy(test.x), torch.from_numpy(test.y)
    loss, correct = 0.0, 0
    with torch.no_grad():
        for lo in range(0, len(y), batch):
            out = model(x[lo : lo + batch])
            loss += float(nn.functional.cross_entropy(out, y[lo : lo + batch], reduction="sum"))
            correct += int((out.argmax(dim=1) == y[lo : lo + batch]).sum())
    return loss / len(y), correct / len(y)


def plain_loop(
    federation: Federation,
    model_fn: Callable[[], nn.Module],
    settings: dict[str, Any],
    rounds: int,
    evaluate: bool = False,
) -> dict[str, Any]:
    """FedAvg written out by hand: no framework, the same steps as sheaf's standard loop.

    With ``evaluate``, the global model is evaluated on the central test set every round.
    """
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = model_fn()
    params = list(model.parameters())
    global_params = [p.detach().clone() for p in params]
    x_all, y_all = torch.from_numpy(federation.x), torch.from_numpy(federation.y)
    batch, lr, momentum = settings["batch_size"], settings["lr"], settings["momentum"]
    size = cohort_size(federation.num_clients, settings["fraction"], settings["min_clients"])
    rng = np.random.default_rng(0)
    seconds = []
    accuracy = float("nan")
    for round in range(1, rounds + 1):
        started = time.perf_counter()
        totals = [torch.zeros_like(p) for p in params]
        weight = 0
        for client in sample_cohort(federation.num_clients, size, seed=0, round=round).tolist():
            start = int(federation.offsets[client])
            n = int(federation.train_counts[client])
            x, y = x_all[start : start + n], y_all[start : start + n]
            with torch.no_grad():
                for p, g in zip(params, global_params, strict=True):
                    p.copy_(g)
            buffers: list[torch.Tensor | None] = [None] * len(params)
            for _ in range(settings["epochs"]):
                order = torch.from_numpy(rng.permutation(n))
                for lo in range(0, n, batch):
                    rows = order[lo : lo + batch]
                    loss = nn.functional.cross_entropy(model(x[rows]), y[rows])
                    grads = torch.autograd.grad(loss, params)
                    with torch.no_grad():
                        for i, (p, grad) in enumerate(zip(params, grads, strict=True)):
                            buf = buffers[i]
                            buffers[i] = buf = grad.clone() if buf is None else buf.mul_(momentum).add_(grad)
                            p.add_(buf, alpha=-lr)
            with torch.no_grad():
                for total, p, g in zip(totals, params, global_params, strict=True):
                    total.add_(p - g, alpha=n)
            weight += n
        with torch.no_grad():
            for g, total in zip(global_params, totals, strict=True):
                g.add_(total / max(weight, 1))
        if evaluate:
            with torch.no_grad():
                for p, g in zip(params, global_params, strict=True):
                    p.copy_(g)
            accuracy = plain_evaluation(model, federation.central_test)[1]
        seconds.append(time.perf_counter() - started)
    out = {"backend": "plain loop", "threads": 1, "fit_s": _median(seconds), "round_s": _median(seconds)}
    return {**out, "seconds": seconds, "central_accuracy": accuracy} if evaluate else out


def _median(values: Sequence[float]) -> float:
    return round(statistics.median(values[1:] if len(values) > 1 else values), 5)


def run_backend(
    name: str,
    federation: Federation,
    model_fn: Callable[[], nn.Module],
    overrides: list[str],
    rounds: int,
    threads: int = 1,
) -> dict[str, Any]:
    backend = Timed(build_backend(name))
    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        result = simulate(
            overrides=[*overrides, f"rounds={rounds}", f"runs_dir={folder}", f"threads={threads}", f"backend={name}"],
            task=TorchTask(model_fn),
            federation=federation,
            backend=backend,  # type: ignore[arg-type]
        )
    return {
        "backend": name,
        "runs_on": backend.chosen,
        "threads": threads,
        "fit_s": _median(backend.fit_seconds),
        "round_s": _median([r.seconds for r in result.history]),
        "wall_s": round(time.perf_counter() - started, 2),
        "central_accuracy": round(float(result.history.final_central["accuracy"]), 4),
        "worker_peaks_mb": [round(m, 1) for m in backend.worker_peaks_mb],
    }


def _backends(requested: Sequence[str]) -> list[str]:
    names = [b for b in requested if b != "ray" or ray_available()]
    return names


def compare(
    scenario: str,
    federation: Federation,
    model_fn: Callable[[], nn.Module],
    settings: dict[str, Any],
    rounds: int,
    backends: Sequence[tuple[str, int]],
) -> list[dict[str, Any]]:
    overrides = [f"{k}={v}" for k, v in settings.items()] + ["evaluation.federated=false"]
    plain = plain_loop(federation, model_fn, settings, rounds)
    rows = [{"scenario": scenario, **plain}]
    _say(rows[-1])
    for name, threads in backends:
        row = {"scenario": scenario, **run_backend(name, federation, model_fn, overrides, rounds, threads)}
        row["speedup_vs_plain"] = round(plain["fit_s"] / row["fit_s"], 2)
        rows.append(row)
        _say(row)
    return rows


def _say(row: dict[str, Any]) -> None:
    print(json.dumps(row), file=sys.stderr, flush=True)


def digits_scenario(rounds: int, backends: Sequence[str]) -> list[dict[str, Any]]:
    federation = build_federation(DataConfig(dataset="digits", clients=1000, partition="iid", min_samples=1), seed=0)
    settings = {"epochs": 1, "batch_size": 16, "lr": 0.05, "momentum": 0.9, "fraction": 0.05, "min_clients": 2}
    rows = compare("digits", federation, digits_mlp, settings, rounds, [(b, 1) for b in backends])
    vectorized = [r for r in rows if r["backend"] == "vectorized"]
    return [
        *rows,
        {
            "scenario": "digits",
            "target": "vectorized >= 5x the plain loop",
            "met": bool(vectorized) and vectorized[0]["speedup_vs_plain"] >= 5,
        },
    ]


def fmnist_scenario(rounds: int, backends: Sequence[str]) -> list[dict[str, Any]]:
    federation = build_federation(DataConfig(dataset="fashion_mnist", clients=100, alpha=0.5), seed=0)
    settings = {"epochs": 1, "batch_size": 32, "lr": 0.05, "momentum": 0.9, "fraction": 0.1, "min_clients": 10}
    runs = [(b, 1) for b in backends] + ([("vectorized", 2)] if "vectorized" in backends else [])
    rows = compare("fmnist", federation, fmnist_cnn, settings, rounds, runs)
    speedups = [r["speedup_vs_plain"] for r in rows if "speedup_vs_plain" in r]
    return [
        *rows,
        {
            "scenario": "fmnist",
            "target": "best backend >= 1.9x the 1-thread plain loop; none more than 1.1x slower",
            "best": max(speedups),
            "worst": min(speedups),
            "met": max(speedups) >= 1.9 and min(speedups) >= 1 / 1.1,
        },
    ]


def _peak_rss_mb(pid: int | str = "self") -> float:
    """A process's peak resident memory (VmHWM: not the parent's, as ru_maxrss is after exec)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 if pid == "self" else 0.0


def population_run(clients: int, backend: str, rounds: int) -> dict[str, Any]:
    """One population size in this (fresh) process."""
    started = time.perf_counter()
    federation = synthetic_federation(clients, samples=8, features=16, classes=2, seed=0)
    built = time.perf_counter() - started
    overrides = [
        f"fraction={100 / clients}",
        "min_clients=2",
        "epochs=1",
        "batch_size=8",
        "evaluation.max_clients=1000",
    ]
    row = run_backend(backend, federation, population_logreg, overrides, rounds)
    own = _peak_rss_mb()
    return {
        "scenario": "population",
        "clients": clients,
        **row,
        "build_s": round(built, 2),
        "peak_mb": round(own, 1),  # pool: each worker's peak is in worker_peaks_mb (it maps the data too)
    }


def population_scenario(rounds: int, backends: Sequence[str], sizes: Sequence[int]) -> list[dict[str, Any]]:
    rows = []
    for backend in backends:
        for clients in sizes:
            command = [sys.executable, __file__, "--population-run", str(clients), "--backend", backend]
            child = subprocess.Popen([*command, "--rounds", str(rounds)], stdout=subprocess.PIPE, text=True)
            with PeakSampler(child.pid) as sampler:
                out, _ = child.communicate()
            if child.returncode:
                raise RuntimeError(f"{' '.join(command)} exited with {child.returncode}")
            rows.append(
                {
                    **json.loads(out),
                    "peak_pss_mb": round(sampler.peak_mb, 1),  # all the run's processes together, at their peak
                    "peak_pss_processes": len(sampler.peak_parts),
                    "peak_pss_largest_mb": sorted((round(v, 1) for v in sampler.peak_parts.values()), reverse=True)[:4],
                }
            )
            _say(rows[-1])
        mine = [r for r in rows if r["backend"] == backend]
        small, large = mine[0], mine[-1]
        rows.append(
            {
                "scenario": "population",
                "backend": backend,
                "target": f"{large['clients']:,} clients within 1.5x of {small['clients']:,} per round; "
                "all processes' PSS <= 2 GB",
                "ratio": round(large["round_s"] / small["round_s"], 2),
                "met": large["round_s"] <= 1.5 * small["round_s"] and max(r["peak_pss_mb"] for r in mine) <= 2048,
            }
        )
    return rows


# FedAvg without a learning-rate decay, pinned: the plain loop computes exactly that, and the
# dataset's defaults have moved to FedAvgM with a decay (docs/quality.md). The whole test set
# every round, pinned too: the dataset's defaults watch rounds on a 2,000-row monitor subset
# (evaluation.monitor) and evaluate all 10,000 images only after the last round.
FMNIST_EVAL = {
    "evaluation.monitor": 0,
    "epochs": 1,
    "batch_size": 32,
    "lr": 0.05,
    "momentum": 0.9,
    "fraction": 0.1,
    "min_clients": 10,
    "strategy": "fedavg",
    "train.lr_decay": 1,
}


class _Clock:
    """A round listener that notes when round 1 starts and when each round is committed, and
    the CPU seconds this process and its workers had used by then."""

    def __init__(self) -> None:
        self.marks: list[float] = []
        self.cpu: list[float] = []

    def on_start(self, *args: Any) -> None:
        self.marks.append(time.time())
        self.cpu.append(tree_cpu_s(os.getpid()))

    def on_round(self, record: Any) -> None:
        self.marks.append(time.time())
        self.cpu.append(tree_cpu_s(os.getpid()))


def eval_run(kind: str, backend: str, rounds: int, central_interval: int) -> dict[str, Any]:
    """One ``fmnist-eval`` run in this (fresh) process; wall-clock marks for the parent to read.

    sheaf builds the federation itself from the config (as ``sheaf simulate`` does), the
    plain loop with the same function and settings: the same data either way.
    """
    data = {"dataset": "fashion_mnist", "clients": 100, "alpha": 0.5}
    if kind == "plain":
        federation = build_federation(DataConfig(**data), seed=0)  # type: ignore[arg-type]
        started, cpu = time.time(), time.process_time()
        row = plain_loop(federation, fmnist_cnn, FMNIST_EVAL, rounds, evaluate=True)
        marks = [started + sum(row["seconds"][:i]) for i in range(rounds + 1)]
        per_round = (time.process_time() - cpu) / rounds  # one process, one thread: the mean
        cpu_marks = [per_round * i for i in range(rounds + 1)]
        return {"runs_on": "plain loop", "marks": marks, "cpu": cpu_marks, "central_accuracy": row["central_accuracy"]}
    overrides = [f"{k}={v}" for k, v in {**data, **FMNIST_EVAL}.items()] + ["evaluation.federated=false", "threads=1"]
    if central_interval != 1:
        overrides.append(f"evaluation.central_interval={central_interval}")
    clock = _Clock()
    with tempfile.TemporaryDirectory() as folder:
        result = simulate(
            overrides=[*overrides, f"rounds={rounds}", f"runs_dir={folder}", f"backend={backend}"],
            task=TorchTask(fmnist_cnn),
            listener=clock,
        )
    return {
        "runs_on": result.backend,
        "marks": clock.marks,
        "cpu": clock.cpu,
        "central_accuracy": round(float(result.history.final_central["accuracy"]), 4),
        "central_loss": result.history.final_central["loss"],
    }


def _launch_eval(kind: str, backend: str, rounds: int, central_interval: int, src: str = "") -> dict[str, Any]:
    """Run :func:`eval_run` in a fresh process (with sheaf from ``src``, if given); its start-up,
    seconds per round and peak PSS."""
    command = [sys.executable, __file__, "--eval-run", kind, "--backend", backend, "--rounds", str(rounds)]
    command += ["--central-interval", str(central_interval)]
    env = {**os.environ, "PYTHONPATH": src} if src else None
    load_before = os.getloadavg()
    launched = time.time()
    child = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env)
    with PeakSampler(child.pid) as sampler:
        out, _ = child.communicate()
    if child.returncode:
        raise RuntimeError(f"{' '.join(command)} exited with {child.returncode}")
    run = json.loads(out)
    marks = run.pop("marks")
    seconds = [b - a for a, b in itertools.pairwise(marks)]
    cpu = [b - a for a, b in itertools.pairwise(run.pop("cpu"))]
    return {
        "scenario": "fmnist-eval",
        "backend": "plain loop" if kind == "plain" else backend,
        "sheaf_from": src or "this tree",
        "central_interval": central_interval,
        **run,
        "startup_s": round(marks[0] - launched, 2),
        "round_s": _median(seconds),
        "rounds_s": [round(v, 3) for v in seconds],
        "cpu_s_per_round": _median(cpu),  # all the run's processes: the work, whatever else runs
        "peak_pss_mb": round(sampler.peak_mb, 1),
        "peak_pss_processes": len(sampler.peak_parts),
        "load_before": [round(v, 2) for v in load_before],
        "load_after": [round(v, 2) for v in os.getloadavg()],
    }


def fmnist_eval_scenario(
    rounds: int, repeats: int, backends: Sequence[str], intervals: Sequence[int], baseline_src: str = ""
) -> list[dict[str, Any]]:
    """The plain loop and sheaf, each run alternating ``repeats`` times; medians across repeats.

    With ``baseline_src`` (another checkout's ``src``), sheaf from there runs in the same
    alternation, every interval-1 configuration (a before/after under the same load).
    """
    runs: list[tuple[str, str, int, str]] = [("plain", "-", 1, "")]
    runs += [("sheaf", b, k, "") for b in backends for k in intervals]
    runs += [("sheaf", b, 1, baseline_src) for b in backends if baseline_src]
    raw: dict[tuple[str, str, int, str], list[dict[str, Any]]] = {run: [] for run in runs}
    for _ in range(repeats):
        for run in runs:
            raw[run].append(_launch_eval(run[0], run[1], rounds, run[2], run[3]))
            _say(raw[run][-1])
    rows = []
    for tries in raw.values():
        row = {
            **tries[-1],
            "repeats": len(tries),
            **{
                key: round(statistics.median(t[key] for t in tries), 3)
                for key in ("startup_s", "round_s", "cpu_s_per_round", "peak_pss_mb")
            },
            "round_s_each": [t["round_s"] for t in tries],
            "cpu_s_per_round_each": [t["cpu_s_per_round"] for t in tries],
            "startup_s_each": [t["startup_s"] for t in tries],
            "peak_pss_mb_each": [t["peak_pss_mb"] for t in tries],
            "load_each": [t["load_before"][0] for t in tries],
        }
        for key in ("rounds_s", "load_before", "load_after"):
            row.pop(key)
        rows.append(row)
    plain = rows[0]["round_s"]
    for row in rows[1:]:
        row["speedup_vs_plain"] = round(plain / row["round_s"], 2)
    best = [r for r in rows[1:] if r["central_interval"] == 1 and r["sheaf_from"] == "this tree"]
    rows.append(
        {
            "scenario": "fmnist-eval",
            "target": "<= 1.9 s per round with central evaluation every round; peak PSS <= 1.76 GB",
            "met": bool(best)
            and min(r["round_s"] for r in best) <= 1.9
            and min(r["peak_pss_mb"] for r in best) <= 1.76 * 1024,
        }
    )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenarios", default="digits,fmnist,population")
    parser.add_argument("--backends", default="inline,vectorized,pool,ray,auto")
    parser.add_argument(
        "--rounds", type=int, default=0, help="rounds per run (default: 12 digits, 4 fmnist, 8 population)"
    )
    parser.add_argument("--sizes", default="1000,100000,1000000", help="population sizes")
    parser.add_argument("--repeats", type=int, default=3, help="fmnist-eval: runs of each, alternating")
    parser.add_argument(
        "--central-intervals", default="1", help="fmnist-eval: evaluation.central_interval values for sheaf"
    )
    parser.add_argument("--baseline-src", default="", help="fmnist-eval: also run sheaf from this src folder")
    parser.add_argument("--population-run", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--eval-run", default="", help=argparse.SUPPRESS)
    parser.add_argument("--central-interval", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--backend", default="auto", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.population_run:
        print(json.dumps(population_run(args.population_run, args.backend, args.rounds)))
        return
    if args.eval_run:
        print(json.dumps(eval_run(args.eval_run, args.backend, args.rounds, args.central_interval)))
        return
    backends = _backends(args.backends.split(","))
    scenarios = args.scenarios.split(",")
    report: dict[str, Any] = {
        "machine": {
            "cores": len(os.sched_getaffinity(0)),
            "load_average_at_start": [round(v, 2) for v in os.getloadavg()],
            "python": platform.python_version(),
            "torch": torch.__version__,
            "platform": platform.platform(),
        },
        "command": " ".join(["python", "benchmarks/engine.py", *sys.argv[1:]]),
        "results": [],
    }
    if "digits" in scenarios:
        report["results"] += digits_scenario(args.rounds or 12, backends)
    if "fmnist" in scenarios:
        report["results"] += fmnist_scenario(args.rounds or 4, backends)
    if "fmnist-eval" in scenarios:
        intervals = [int(k) for k in args.central_intervals.split(",")]
        eval_backends = [b for b in backends if b in ("auto", "pool", "inline", "vectorized", "ray")]
        report["results"] += fmnist_eval_scenario(
            args.rounds or 6, args.repeats, eval_backends, intervals, args.baseline_src
        )
    if "population" in scenarios:
        sizes = [int(s) for s in args.sizes.split(",")]
        report["results"] += population_scenario(args.rounds or 8, backends, sizes)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
