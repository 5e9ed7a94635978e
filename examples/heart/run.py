"""Four hospitals train one heart-disease model with FedAvg; a pooled baseline beside it.

Run from the repository root:

    python examples/heart/run.py            # add --set key=value to change settings

The federated model is evaluated on the union of the hospitals' test splits; the pooled
baseline trains the same model on all hospitals' training rows pooled (what one could do
if the data could be shared) and is tested on the same rows.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rich.console import Console
from rich.table import Table

import sheaf
from sheaf.run import pooled_baseline

CONFIG = Path(__file__).with_name("heart.toml")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="override a setting, key=value")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    args = parser.parse_args()

    config = sheaf.load_config(CONFIG, args.overrides)
    result = sheaf.simulate(config)
    baseline = pooled_baseline(config)

    with sheaf.RunStore.open(result.run_path, readonly=True) as store:
        last = store.history().rounds_completed
        per_client = {rec.client_id: rec for _, rec in store.client_records(round=last, phase="evaluate")}
        names = store.meta["client_names"]
    figures = {
        "federated_accuracy": result.summary()["central_accuracy"],
        "pooled_accuracy": baseline.metrics["accuracy"],
        "gap": result.summary()["central_accuracy"] - baseline.metrics["accuracy"],
        "per_hospital_accuracy": {names[c]: r.metrics["accuracy"] for c, r in sorted(per_client.items())},
        "test_patients": baseline.test_examples,
        "run_path": str(result.run_path),
    }
    if args.json:
        print(json.dumps(figures))
        return
    table = Table(title="Heart disease, 4 hospitals: FedAvg vs pooled training")
    table.add_column("model")
    table.add_column("test accuracy", justify="right")
    table.add_row("FedAvg, data stays at each hospital", f"{figures['federated_accuracy']:.3f}")
    table.add_row("pooled baseline (all rows in one place)", f"{figures['pooled_accuracy']:.3f}")
    for name, acc in figures["per_hospital_accuracy"].items():
        table.add_row(f"  FedAvg model on {name}'s test split", f"{acc:.3f}")
    Console().print(table)
    print(f"{figures['test_patients']} test patients (the union of the hospitals' test splits); run: {result.run_path}")


if __name__ == "__main__":
    main()
