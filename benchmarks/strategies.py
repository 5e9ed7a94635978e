"""Every strategy on non-IID digits, under attack, and q-FFL's fairness, as JSON.

    python benchmarks/strategies.py [--only strategies,attacks,fairness] [--rounds 50]

- ``strategies``: digits over 100 clients (Dirichlet alpha 0.3), 10 clients a round,
  50 rounds, the built-in MLP; for every registered strategy the final central accuracy
  and the clients' accuracy at the last federated evaluation (mean, worst-10% mean, std),
  plus the personalised accuracy where it is measured (FedPer; and FedAvg with 5 steps
  of local fine-tuning).
- ``attacks``: the same run with 20% of the clients malicious, sending sign-flipped or
  x10-scaled updates, for FedAvg and the robust aggregators; beside each, its clean
  accuracy and the drop.
- ``fairness``: q-FedAvg for several q against FedAvg on a skewed partition (30 clients,
  Dirichlet alpha 0.1, a third of the clients a round), over three seeds: the clients'
  worst-10% accuracy and mean accuracy.

Accuracies are deterministic (same seed, same numbers on any machine with the same
library versions); no timings are reported.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
from collections.abc import Sequence
from typing import Any

import sheaf
from sheaf.strategies.registry import available_strategies

#: The issue's setting: digits, 100 clients, Dirichlet 0.3, 10 a round.
BASE = ["dataset=digits", "clients=100", "partition=dirichlet", "alpha=0.3", "fraction=0.1", "min_clients=2"]

#: Hyperparameters for a cohort of 10 with up to 20% attackers (the defaults elsewhere).
HYPER: dict[str, list[str]] = {
    "median": ["strategy.f=2"],
    "trimmed_mean": ["strategy.beta=0.2"],
    "krum": ["strategy.f=2"],
    "multikrum": ["strategy.f=2"],
    "bulyan": ["strategy.f=1"],
}

ROBUST = ["fedavg", "median", "trimmed_mean", "krum", "multikrum", "bulyan"]


def run(overrides: Sequence[str], folder: str) -> dict[str, Any]:
    result = sheaf.simulate(overrides=[*overrides, f"runs_dir={folder}"])
    fed = result.history.final_federated
    acc = fed.get("accuracy", {})
    row: dict[str, Any] = {
        "central_accuracy": round(result.history.final_central["accuracy"], 4),
        "client_mean": round(acc.get("mean", float("nan")), 4),
        "client_p10": round(acc.get("p10", float("nan")), 4),
        "client_std": round(acc.get("std", float("nan")), 4),
        "rounds_skipped": sum(1 for r in result.history if not r.aggregated),
    }
    tuned = fed.get("personalized_accuracy")
    if tuned:
        row["personalized_mean"] = round(tuned["mean"], 4)
        row["personalized_p10"] = round(tuned["p10"], 4)
    return row


def strategies(rounds: int, folder: str) -> dict[str, Any]:
    rows = {}
    for name in available_strategies():
        settings = [*BASE, f"rounds={rounds}", f"evaluation.interval={rounds}", f"strategy={name}", *HYPER.get(name, [])]
        rows[name] = {"settings": HYPER.get(name, []), **run(settings, folder)}
    tuned = [*BASE, f"rounds={rounds}", f"evaluation.interval={rounds}", "strategy=fedavg", "finetune_steps=5"]
    rows["fedavg + 5 fine-tuning steps"] = {"settings": ["personalization.finetune_steps=5"], **run(tuned, folder)}
    return {"command": "sheaf simulate --set " + " --set ".join([*BASE, f"rounds={rounds}", "strategy=NAME"]), "rows": rows}


def attacks(rounds: int, folder: str, clean: dict[str, Any] | None) -> dict[str, Any]:
    rows: dict[str, Any] = {}
    for name in ROBUST:
        common = [*BASE, f"rounds={rounds}", f"evaluation.interval={rounds}", f"strategy={name}", *HYPER.get(name, [])]
        base_acc = clean["rows"][name]["central_accuracy"] if clean else run(common, folder)["central_accuracy"]
        rows[name] = {"clean": base_acc}
        for attack in ("sign_flip", "scale"):
            attacked = run([*common, f"attack={attack}", "attack.malicious_fraction=0.2", "attack.scale=10"], folder)
            rows[name][attack] = attacked["central_accuracy"]
            rows[name][f"{attack}_drop"] = round(base_acc - attacked["central_accuracy"], 4)
    return {
        "command": "... --set attack=sign_flip|scale --set attack.malicious_fraction=0.2 --set attack.scale=10",
        "rows": rows,
    }


def fairness(rounds: int, folder: str) -> dict[str, Any]:
    skewed = ["dataset=digits", "clients=30", "partition=dirichlet", "alpha=0.1", "fraction=0.34", f"rounds={rounds}"]
    variants = {"fedavg": ["strategy=fedavg"]} | {
        f"qfedavg q={q}": ["strategy=qfedavg", f"strategy.q={q}"] for q in (0.0, 0.5, 1.0, 2.0, 5.0)
    }
    rows = {}
    for label, settings in variants.items():
        runs = [run([*skewed, f"evaluation.interval={rounds}", f"seed={seed}", *settings], folder) for seed in range(3)]
        rows[label] = {
            "client_p10": [r["client_p10"] for r in runs],
            "client_p10_mean": round(statistics.mean(r["client_p10"] for r in runs), 4),
            "client_mean": round(statistics.mean(r["client_mean"] for r in runs), 4),
            "client_std": round(statistics.mean(r["client_std"] for r in runs), 4),
            "central_accuracy": round(statistics.mean(r["central_accuracy"] for r in runs), 4),
        }
    return {"command": "sheaf simulate --set " + " --set ".join(skewed) + " --set seed=S --set strategy=...", "rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default="strategies,attacks,fairness", help="comma-separated sections")
    parser.add_argument("--rounds", type=int, default=50)
    args = parser.parse_args()
    sections = set(args.only.split(","))
    figures: dict[str, Any] = {"python": platform.python_version()}
    with tempfile.TemporaryDirectory() as folder:
        if "strategies" in sections:
            figures["strategies"] = strategies(args.rounds, folder)
        if "attacks" in sections:
            figures["attacks"] = attacks(args.rounds, folder, figures.get("strategies"))
        if "fairness" in sections:
            figures["fairness"] = fairness(args.rounds, folder)
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
