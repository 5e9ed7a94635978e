"""Cross-device time to target, in virtual hours: FedBuff against synchronous FedAvg, as JSON.

    python benchmarks/async.py                          # the defaults below
    python benchmarks/async.py --clients 1000 --target 0.7 --max-rounds 150 --seeds 0 1

Fashion-MNIST over ``--clients`` Dirichlet(0.5) clients, the small CNN (``model=cnn``), on
simulated ``mobile`` devices (``[devices]``: log-normal compute around ``--compute`` s per
sample with spread 0.7, bandwidth around 20/5 Mbit/s, diurnal availability of 8 hours a
day in 24 time zones). Three ways to train, each until the monitored accuracy (a fixed
1,000-row subset of the test set, ``evaluation.monitor``) reaches ``--target`` or
``--max-rounds`` rounds (server steps) have run:

- ``sync``: FedAvg, ``--cohort`` clients per round, the round waits for its slowest one;
- ``sync_overselect``: the same, sampling 30% more and keeping the first ``--cohort``
  (Bonawitz et al. 2019);
- ``fedbuff``: FedBuff, ``--concurrency`` clients training at a time, a server step every
  ``--cohort`` arrivals, staleness weight 1/sqrt(1+s), server lr 1 (Nguyen et al. 2022).

Reported per way and seed: virtual hours to target (null if not reached), rounds, client
updates used, final accuracy on the whole test set, wall seconds. Then the clock's wall
overhead: the ``sync`` run without ``[devices]`` and with it (always-online devices, no
deadline: the same model, checked), interleaved, per-round wall seconds (median after
the first round); and the clock's own work per round (sampling among online devices and
planning an over-selected round with a deadline), timed directly over 500 rounds, as a
share of a round: a figure a loaded machine does not blur. The machine's load average is recorded with every figure: these
machines are shared, so figures from different loads do not compare.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from sheaf.core.config import RunConfig
from sheaf.core.sampling import cohort_size
from sheaf.data.catalog import build_federation
from sheaf.evaluation.history import History, RoundRecord
from sheaf.run.clock import VirtualClock
from sheaf.run.loop import _clocked_cohort
from sheaf.run.population import Population
from sheaf.run.simulate import load_run_config, simulate
from sheaf.run.store import RunStore
from sheaf.task.factory import build_task


class _Reached(Exception):
    """Raised by the listener to stop a run once it reaches the target."""


class _StopAtTarget:
    def __init__(self, target: float) -> None:
        self.target = target
        self.path: Path | None = None

    def on_store(self, path: Path) -> None:
        self.path = path

    def on_start(self, *args: object) -> None:
        pass

    def on_round(self, record: RoundRecord) -> None:
        if record.monitor.get("accuracy", 0.0) >= self.target:
            raise _Reached


def _load() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


def _base(args: argparse.Namespace, seed: int, runs: str) -> list[str]:
    return [
        "dataset=fashion_mnist",
        "model=cnn",  # the small CNN and FedAvg, pinned: the dataset's defaults have moved since
        "strategy=fedavg",
        "train.lr_decay=1",
        f"clients={args.clients}",
        "partition=dirichlet",
        "alpha=0.5",
        f"seed={seed}",
        f"rounds={args.max_rounds}",
        "epochs=2",
        "batch_size=16",
        "lr=0.05",
        f"backend={args.backend}",
        "evaluation.federated=false",
        "evaluation.monitor=1000",
        f"runs_dir={runs}",
    ]


def _devices(args: argparse.Namespace) -> list[str]:
    return ["devices.enabled=true", "availability=diurnal", f"compute={args.compute}"]


WAYS: dict[str, list[str]] = {
    "sync": [],
    "sync_overselect": ["overselect=0.3"],
    "fedbuff": ["asynchronous.enabled=true"],
}


def _way(args: argparse.Namespace, name: str) -> list[str]:
    fraction = args.cohort / args.clients
    extra = [*_devices(args), *WAYS[name], f"fraction={fraction}", "min_clients=1"]
    if name == "fedbuff":
        extra += [f"concurrency={args.concurrency}", f"buffer={args.cohort}"]
    return extra


def _history(listener: _StopAtTarget) -> tuple[History, str]:
    assert listener.path is not None
    with RunStore.open(listener.path, readonly=True) as store:
        return store.history(), str(store.meta.get("backend", ""))


def time_to_target(args: argparse.Namespace, name: str, seed: int, federation: Any) -> dict[str, Any]:
    listener = _StopAtTarget(args.target)
    started, load = time.perf_counter(), _load()
    with tempfile.TemporaryDirectory() as runs:
        try:
            simulate(overrides=[*_base(args, seed, runs), *_way(args, name)], federation=federation, listener=listener)
            reached = False
        except _Reached:
            reached = True
        history, backend = _history(listener)
    last = history[-1]
    return {
        "way": name,
        "seed": seed,
        "backend": backend,
        "reached": reached,
        "virtual_hours_to_target": round(last.virtual_seconds / 3600, 4) if reached else None,
        "virtual_hours_run": round(last.virtual_seconds / 3600, 4),
        "rounds": last.round,
        "updates_used": sum(r.completed for r in history),
        "clients_started": sum(r.sampled for r in history),
        "dropouts": sum(r.failed for r in history),
        "monitor_accuracy": round(last.monitor.get("accuracy", float("nan")), 4),
        "staleness_mean": (
            round(statistics.mean(r.fit["staleness_mean"] for r in history), 3) if name == "fedbuff" else None
        ),
        "wall_seconds": round(time.perf_counter() - started, 1),
        "load_average_before": load,
        "load_average_after": _load(),
    }


def clock_overhead(args: argparse.Namespace, federation: Any) -> dict[str, Any]:
    """The same synchronous run without and with the clock, interleaved ``--repeats`` times."""
    rounds = args.overhead_rounds
    per_round: dict[str, list[float]] = {"without": [], "with": []}
    loads: list[list[float]] = []
    params: dict[str, Any] = {}
    for _ in range(args.repeats):
        for label, extra in (("without", []), ("with", ["devices.enabled=true", f"compute={args.compute}"])):
            with tempfile.TemporaryDirectory() as runs:
                overrides = [
                    *_base(args, 0, runs),
                    f"rounds={rounds}",
                    f"fraction={args.cohort / args.clients}",
                    *extra,
                ]
                loads.append(_load())
                result = simulate(overrides=overrides, federation=federation)
            per_round[label] += [r.seconds for r in result.history][1:]
            params[label] = result.params
    without, with_clock = statistics.median(per_round["without"]), statistics.median(per_round["with"])
    return {
        "rounds_per_run": rounds,
        "runs_each": args.repeats,
        "same_model": params["without"].array_equal(params["with"]),
        "round_seconds_median_without_clock": round(without, 4),
        "round_seconds_median_with_clock": round(with_clock, 4),
        "overhead": round(with_clock / without - 1, 4),
        "load_averages": loads,
    }


def clock_cost(args: argparse.Namespace, federation: Any) -> dict[str, Any]:
    """The clock's own work per synchronous round (sampling among the online devices and
    planning the round, over-selected, diurnal), timed directly: robust to a loaded machine."""
    with tempfile.TemporaryDirectory() as runs:
        config = load_run_config(overrides=[*_base(args, 0, runs), *_way(args, "sync_overselect"), "deadline=600"])
    params = build_task(config, federation.info).init_params(0)
    clock = VirtualClock.for_run(config, federation.train_counts, params.nbytes)
    population = Population.of(federation)
    size = cohort_size(population.num_clients, config.strategy.fraction, config.strategy.min_clients)
    times, now = [], 0.0
    for number in range(1, 501):
        started = time.perf_counter()
        _, plan = _clocked_cohort(clock, population, config, size, number, now)
        times.append(time.perf_counter() - started)
        now = plan.end
    return {
        "rounds_timed": len(times),
        "clock_seconds_per_round_median": round(statistics.median(times), 6),
        "load_average": _load(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--cohort", type=int, default=20, help="clients per round; FedBuff's buffer K")
    parser.add_argument("--concurrency", type=int, default=60, help="FedBuff's C")
    parser.add_argument("--compute", type=float, default=0.05, help="median seconds per sample")
    parser.add_argument("--target", type=float, default=0.7)
    parser.add_argument("--max-rounds", type=int, default=150)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--ways", nargs="+", default=list(WAYS), choices=list(WAYS))
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--overhead-rounds", type=int, default=15)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--skip-overhead", action="store_true")
    args = parser.parse_args()
    config: RunConfig = load_run_config(overrides=_base(args, 0, tempfile.gettempdir()))
    federation = build_federation(config.data, config.seed)
    report: dict[str, Any] = {
        "benchmark": "async",
        "command": " ".join(["python", *sys.argv]),
        "cpus": os.cpu_count(),
        "load_average_at_start": _load(),
        "settings": {k: v for k, v in vars(args).items() if k not in ("ways", "seeds")},
        "runs": [],
    }
    for seed in args.seeds:
        if seed != config.seed:
            federation = build_federation(load_run_config(overrides=_base(args, seed, "runs")).data, seed)
        for name in args.ways:
            row = time_to_target(args, name, seed, federation)
            report["runs"].append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
    if not args.skip_overhead:
        federation = build_federation(config.data, config.seed)
        report["clock_cost"] = clock_cost(args, federation)
        report["clock_overhead"] = clock_overhead(args, federation)
        report["clock_overhead"]["clock_share_of_a_round"] = round(
            report["clock_cost"]["clock_seconds_per_round_median"]
            / report["clock_overhead"]["round_seconds_median_without_clock"],
            6,
        )
    report["load_average_at_end"] = _load()
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
