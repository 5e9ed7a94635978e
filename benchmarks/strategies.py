"""Every strategy on non-IID digits, under attack, and q-FFL's fairness, as JSON.

    python benchmarks/strategies.py [--only strategies,attacks,fairness] [--seeds 3] [--rounds 50]

- ``strategies``: digits over 100 clients (Dirichlet alpha 0.3), 10 clients a round,
  50 rounds, the built-in MLP; for every registered strategy the final central accuracy
  and the clients' accuracy at the last federated evaluation (mean, worst-10% mean, std),
  plus the personalised accuracy where it is measured (FedPer; and FedAvg with 5 steps
  of local fine-tuning), each the mean over seeds.
- ``attacks``: the same runs with 20% of the clients malicious, sending sign-flipped
  (x -10) or scaled (x10) updates, for FedAvg and the robust aggregators; beside each, its
  clean accuracy and the drop (means over seeds).
- ``attacks_per_round``: the same with exactly 2 of every round's 10 clients malicious
  (``attack.per_round``), the setting robust aggregators state their guarantees for.
- ``fairness``: q-FedAvg for several q against FedAvg on the four hospitals of the heart
  data (a naturally skewed partition: sizes 123-304, disease rates 46-94%), over eight
  seeds: the worst hospital's accuracy and the mean over hospitals.

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
from pathlib import Path
from typing import Any

import sheaf
from sheaf.strategies.registry import available_strategies

#: The issue's setting: digits, 100 clients, Dirichlet 0.3, 10 a round.
BASE = ["dataset=digits", "clients=100", "partition=dirichlet", "alpha=0.3", "fraction=0.1", "min_clients=2"]

#: For a cohort of 10 drawn from a population that is 20% attackers (a round holds 3 or more
#: attackers in a third of rounds): Krum, Multi-Krum, Bulyan and the median with the largest
#: f their assumption allows for n = 10; the trimmed mean trims the attackers' share.
HYPER: dict[str, list[str]] = {
    "median": ["strategy.f=4"],
    "trimmed_mean": ["strategy.beta=0.2"],
    "krum": ["strategy.f=3"],
    "multikrum": ["strategy.f=3"],
    "bulyan": ["strategy.f=1"],
}

ROBUST = ["fedavg", "median", "trimmed_mean", "krum", "multikrum", "bulyan"]
HEART = Path(__file__).resolve().parents[1] / "examples" / "heart" / "heart.toml"


def run(overrides: Sequence[str], folder: str, config: Path | None = None) -> dict[str, Any]:
    result = sheaf.simulate(config, overrides=[*overrides, f"runs_dir={folder}"])
    fed = result.history.final_federated
    acc = fed.get("accuracy", {})
    row: dict[str, Any] = {
        "central_accuracy": result.history.final_central["accuracy"],
        "client_mean": acc.get("mean", float("nan")),
        "client_p10": acc.get("p10", float("nan")),
        "client_std": acc.get("std", float("nan")),
        "client_min": acc.get("min", float("nan")),
        "rounds_skipped": sum(1 for r in result.history if not r.aggregated),
    }
    tuned = fed.get("personalized_accuracy")
    if tuned:
        row["personalized_mean"] = tuned["mean"]
        row["personalized_p10"] = tuned["p10"]
    return row


def over_seeds(overrides: Sequence[str], folder: str, seeds: int, config: Path | None = None) -> dict[str, Any]:
    """Each figure's mean over seeds (4 decimals), and the per-seed central accuracies."""
    runs = [run([*overrides, f"seed={seed}"], folder, config) for seed in range(seeds)]
    out = {key: round(statistics.mean(r[key] for r in runs), 4) for key in runs[0]}
    out["central_by_seed"] = [round(r["central_accuracy"], 4) for r in runs]
    return out


def strategies(rounds: int, seeds: int, folder: str) -> dict[str, Any]:
    common = [*BASE, f"rounds={rounds}", f"evaluation.interval={rounds}"]
    rows = {}
    for name in available_strategies():
        rows[name] = {
            "settings": HYPER.get(name, []),
            **over_seeds([*common, f"strategy={name}", *HYPER.get(name, [])], folder, seeds),
        }
    tuned = ["personalization.finetune_steps=5"]
    rows["fedavg + 5 fine-tuning steps"] = {
        "settings": tuned,
        **over_seeds([*common, "strategy=fedavg", *tuned], folder, seeds),
    }
    return {"command": "sheaf simulate --set " + " --set ".join([*common, "seed=S", "strategy=NAME"]), "rows": rows}


#: With exactly 2 attackers in every cohort of 10 (attack.per_round): each aggregator with
#: the f that names them (Bulyan's assumption n >= 4f + 3 allows only f = 1 for n = 10).
HYPER_PER_ROUND: dict[str, list[str]] = {
    "median": ["strategy.f=2"],
    "trimmed_mean": ["strategy.beta=0.2"],
    "krum": ["strategy.f=2"],
    "multikrum": ["strategy.f=2"],
    "bulyan": ["strategy.f=1"],
}


def attacks(
    rounds: int, seeds: int, folder: str, clean: dict[str, Any] | None, per_round: bool = False
) -> dict[str, Any]:
    common = [*BASE, f"rounds={rounds}", f"evaluation.interval={rounds}"]
    hyper = HYPER_PER_ROUND if per_round else HYPER
    mode = [f"attack.per_round={'true' if per_round else 'false'}"]
    rows: dict[str, Any] = {}
    for name in ROBUST:
        settings = [*common, f"strategy={name}", *hyper.get(name, [])]
        base = (
            clean["rows"][name]["central_accuracy"]
            if clean and not per_round
            else over_seeds(settings, folder, seeds)["central_accuracy"]
        )
        rows[name] = {"settings": hyper.get(name, []), "clean": base}
        for attack in ("sign_flip", "scale"):
            attacked = over_seeds(
                [*settings, f"attack={attack}", "attack.malicious_fraction=0.2", "attack.scale=10", *mode],
                folder,
                seeds,
            )
            rows[name][attack] = attacked["central_accuracy"]
            rows[name][f"{attack}_by_seed"] = attacked["central_by_seed"]
            rows[name][f"{attack}_drop"] = round(base - attacked["central_accuracy"], 4)
    return {
        "command": "the strategies runs with --set attack=sign_flip|scale --set attack.malicious_fraction=0.2 "
        f"--set attack.scale=10 --set {mode[0]}",
        "rows": rows,
    }


def fairness(seeds: int, folder: str) -> dict[str, Any]:
    variants = {"fedavg": ["strategy=fedavg"]} | {
        f"qfedavg q={q:g}": ["strategy=qfedavg", f"strategy.q={q}"] for q in (0.0, 1.0, 3.0, 5.0)
    }
    rows = {}
    for label, settings in variants.items():
        result = over_seeds(settings, folder, seeds, HEART)
        rows[label] = {
            "worst_hospital": result["client_min"],
            "mean_over_hospitals": result["client_mean"],
            "std_over_hospitals": result["client_std"],
            "central_accuracy": result["central_accuracy"],
        }
    return {
        "command": "sheaf simulate examples/heart/heart.toml --set seed=S --set strategy=qfedavg --set strategy.q=Q",
        "seeds": seeds,
        "rows": rows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--only", default="strategies,attacks,attacks_per_round,fairness", help="comma-separated sections"
    )
    parser.add_argument("--rounds", type=int, default=50)
    parser.add_argument("--seeds", type=int, default=3, help="seeds for the digits runs (heart uses 8)")
    args = parser.parse_args()
    sections = set(args.only.split(","))
    figures: dict[str, Any] = {"python": platform.python_version(), "seeds": args.seeds}
    with tempfile.TemporaryDirectory() as folder:
        if "strategies" in sections:
            figures["strategies"] = strategies(args.rounds, args.seeds, folder)
        if "attacks" in sections:
            figures["attacks"] = attacks(args.rounds, args.seeds, folder, figures.get("strategies"))
        if "attacks_per_round" in sections:
            figures["attacks_per_round"] = attacks(args.rounds, args.seeds, folder, None, per_round=True)
        if "fairness" in sections:
            figures["fairness"] = fairness(8, folder)
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
