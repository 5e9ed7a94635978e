"""What Ray's actor start-up costs a run, with new actors and with kept ones, as JSON.

    python benchmarks/ray_start.py [--repeats 4] [--kinds new kept_first kept]
        [--worker-niceness 0 15] [--hogs 3]

One local Ray instance (2 CPUs, no dashboard), as ``tests/conftest.py``'s ``ray_session``
starts for the suite; then short runs (the quickstart's digits over 10 clients, all of
them in each of 2 rounds) on ``RayBackend(workers=2)``, in repeats of three so that load
from elsewhere falls on each kind alike: ``new``, with new actors (``keep_actors=False``,
the default: two new processes import torch and load the task; it also kills actors kept
before, as any run that does not keep them does); ``kept_first``, with ``keep_actors=True``
and nothing kept yet (new actors, kept at its end); ``kept``, loading its task into the
actors ``kept_first`` kept. The first repeat is a warm-up and not counted. ``wall_s`` is
each run's whole wall time; every run's model is checked equal bit for bit.

``--worker-niceness`` gives Ray's ``worker_niceness`` (the backend starts Ray with 0,
``local_ray_system_config()``; Ray's own default is 15): one Ray instance after another, each
measured alike. ``--hogs N`` starts N busy processes (``while 1: pass``, niceness 0) for the
measurement and kills them at the end, as the suite met them on a shared 2-core machine.

Every figure comes with ``os.getloadavg()``: the machine these ran on is shared.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

import ray

from sheaf.backends.ray_backend import RayBackend, local_ray_system_config, release_actors
from sheaf.run.simulate import simulate

RUN = ["dataset=digits", "clients=10", "rounds=2", "fraction=1", "partition=iid", "evaluation.interval=2"]


def measure(niceness: int, kinds: list[str], repeats: int) -> dict[str, Any]:
    """One Ray instance with ``worker_niceness`` set: each kind's runs (after a warm-up)."""
    load_before = os.getloadavg()
    started = time.perf_counter()
    config = {**local_ray_system_config(), "worker_niceness": niceness}
    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.ERROR, _system_config=config)
    init_s = time.perf_counter() - started
    times: dict[str, list[float]] = {kind: [] for kind in kinds}
    digests: set[bytes] = set()
    with tempfile.TemporaryDirectory() as folder:
        for repeat in range(repeats + 1):
            for kind in times:
                started = time.perf_counter()
                result = simulate(
                    overrides=[*RUN, f"runs_dir={folder}"],
                    backend=RayBackend(workers=2, keep_actors=kind != "new"),
                )
                if repeat:
                    times[kind].append(round(time.perf_counter() - started, 3))
                digests.add(b"".join(value.tobytes() for _, value in sorted(result.params.items())))
    release_actors()
    ray.shutdown()
    return {
        "worker_niceness": niceness,
        "ray_init_s": round(init_s, 3),
        "wall_s": times,
        "median_s": {kind: statistics.median(values) for kind, values in times.items()},
        "same_model_every_run": len(digests) == 1,
        "loadavg_before": load_before,
        "loadavg_after": os.getloadavg(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=4)
    parser.add_argument(
        "--kinds", nargs="+", default=["new", "kept_first", "kept"], choices=["new", "kept_first", "kept"]
    )
    parser.add_argument("--worker-niceness", type=int, nargs="+", default=[0])
    parser.add_argument("--hogs", type=int, default=0, help="busy processes to start beside the measurement")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # `timeout` too must end the hogs
    hogs = [subprocess.Popen([sys.executable, "-c", "while 1: pass"]) for _ in range(args.hogs)]
    try:
        runs = [measure(niceness, args.kinds, args.repeats) for niceness in args.worker_niceness]
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()
    print(json.dumps({"hogs": args.hogs, "cpus": os.cpu_count(), "runs": runs}))


if __name__ == "__main__":
    main()
