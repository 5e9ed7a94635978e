"""A CNN trained federatedly on Fashion-MNIST: 100 label-skewed clients, 10 per round.

Run from the repository root (needs ``apt-get install dataset-fashion-mnist``):

    python examples/fashion-mnist/run.py            # add --set key=value to change settings

Evaluating the CNN on all 10,000 test images costs more than a round's training on this
kind of CPU, so the progress shown each round is on a fixed 2,000 of them (``--monitor``, the setting
``evaluation.monitor``); the final model is evaluated on the whole official test set — the
figure the run store, its report and the dashboard headline — and on every client's local
test split.
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
from sheaf.data import build_federation

CONFIG = Path(__file__).with_name("fashion_mnist.toml")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="override a setting, key=value")
    parser.add_argument("--monitor", type=int, default=2000, help="test images evaluated every round (0: all)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    args = parser.parse_args()

    started = time.perf_counter()
    # Watched each round on a fixed subset of the test images; the final model on all of them.
    config = sheaf.load_config(CONFIG, [f"evaluation.monitor={args.monitor}", *args.overrides])
    federation = build_federation(config.data, config.seed)
    listener = None if args.json else ProgressListener(Console(stderr=True))
    try:
        result = sheaf.simulate(config, federation=federation, listener=listener)
    finally:
        if listener is not None:
            listener.stop()
    summary = result.summary()
    figures = {
        "clients": federation.num_clients,
        "training_images": int(federation.train_counts.sum()),
        "rounds": summary["rounds"],
        "test_accuracy": summary["central_accuracy"],
        "test_images": len(federation.central_test),
        "client_accuracy": summary["federated_accuracy"],
        "seconds": round(time.perf_counter() - started, 1),
        "run_path": summary["run_path"],
    }
    if args.json:
        print(json.dumps(figures))
        return
    table = Table(
        title=f"Fashion-MNIST, {config.model.name}, {config.strategy.name}: {figures['clients']} clients, {config.data.partition}"
    )
    table.add_column("figure")
    table.add_column("value", justify="right")
    table.add_row("training images (all clients)", str(figures["training_images"]))
    table.add_row("rounds", str(figures["rounds"]))
    table.add_row(f"test accuracy ({figures['test_images']} official test images)", f"{figures['test_accuracy']:.4f}")
    fed = figures["client_accuracy"]
    table.add_row(
        "client accuracy: mean / worst 10% / worst", f"{fed['mean']:.4f} / {fed['p10']:.4f} / {fed['min']:.4f}"
    )
    table.add_row("wall time", f"{figures['seconds']} s")
    Console().print(table)
    print(f"run: {figures['run_path']}")


if __name__ == "__main__":
    main()
