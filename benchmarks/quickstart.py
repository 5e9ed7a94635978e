"""Quickstart and heart figures, as JSON: the numbers the README and docs cite.

    python benchmarks/quickstart.py [--seeds 8]

- ``quickstart``: the quickstart run cold, as a user runs it (``sheaf simulate --json`` in
  a fresh process: imports, data, 60 rounds, evaluation, store), and its accuracy, over
  three seeds; plus the mean seconds per round from the run records.
- ``heart``: FedAvg over the four hospitals versus the pooled baseline on the same test
  rows, for each seed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def quickstart(seeds: int) -> dict[str, object]:
    runs = []
    with tempfile.TemporaryDirectory() as folder:
        for seed in range(seeds):
            started = time.perf_counter()
            out = subprocess.run(
                [sys.executable, "-m", "sheaf", "simulate", "--json", "--set", f"seed={seed}"],
                cwd=folder,
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            wall = time.perf_counter() - started
            summary = json.loads(out)
            from sheaf.run.store import RunStore

            with RunStore.open(Path(folder) / summary["run_path"], readonly=True) as store:
                per_round = statistics.mean(r.seconds for r in store.history())
            runs.append(
                {
                    "seed": seed,
                    "central_accuracy": round(summary["central_accuracy"], 4),
                    "client_accuracy_p10": round(summary["federated_accuracy"]["p10"], 4),
                    "process_wall_seconds": round(wall, 2),
                    "simulate_wall_seconds": summary["wall_seconds"],
                    "seconds_per_round": round(per_round, 4),
                }
            )
    return {"command": "sheaf simulate --json --set seed=S", "runs": runs}


def heart(seeds: int) -> dict[str, object]:
    import sheaf
    from sheaf.run.baseline import pooled_baseline

    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for seed in range(seeds):
            config = sheaf.load_config(
                ROOT / "examples" / "heart" / "heart.toml", [f"seed={seed}", f"runs_dir={folder}"]
            )
            federated = sheaf.simulate(config).summary()["central_accuracy"]
            pooled = pooled_baseline(config).metrics["accuracy"]
            rows.append(
                {
                    "seed": seed,
                    "fedavg": round(federated, 4),
                    "pooled": round(pooled, 4),
                    "gap": round(federated - pooled, 4),
                }
            )
    return {
        "command": "examples/heart/heart.toml with seed=S, and pooled_baseline of the same config",
        "runs": rows,
        "mean_fedavg": round(statistics.mean(r["fedavg"] for r in rows), 4),
        "mean_pooled": round(statistics.mean(r["pooled"] for r in rows), 4),
        "max_abs_gap": round(max(abs(r["gap"]) for r in rows), 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=8, help="seeds for the heart comparison")
    args = parser.parse_args()
    figures = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "quickstart": quickstart(3),
        "heart": heart(args.seeds),
    }
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
