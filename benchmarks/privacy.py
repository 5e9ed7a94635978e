"""The privacy/utility curve: accuracy versus epsilon (delta = 1e-5), as JSON.

    python benchmarks/privacy.py [--only digits,heart] [--digits-rounds 100] [--heart-seeds 3]

- ``digits``: the 8x8 digits over 1,000 clients (IID, one or two training images each),
  Poisson sampling of 10% of the clients a round (about 100), 100 rounds, the built-in
  64-64-10 MLP trained one local epoch (SGD lr 0.1, momentum 0.9, batch 4), DP-FedAvgM
  (server momentum 0.9, the server optimiser McMahan et al. 2018 use) with the updates
  clipped to C = 0.5 by the server. One row per noise multiplier z, beside FedAvgM
  without DP and DP with clipping but no noise; two rows with adaptive clipping (target
  median) and one with local DP. Seed 0.
- ``heart``: the four hospitals of the UCI heart data (``examples/heart/heart.toml``:
  every hospital every round, 50 rounds), client-level DP where a client is a whole
  hospital, C = 0.3; means over seeds 0, 1, 2.

Each row reports the final central accuracy and the epsilon at delta = 1e-5 after the
last round from the run itself (RDP accountant, as recorded in its store) and, for the
same mechanism, from the PLD accountant. Accuracies are deterministic (seeded noise; same
seed, same numbers on any machine with the same library versions); no timings.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from _harness import DIGITS_1000, DIGITS_DELTA

import sheaf
from sheaf.privacy import RoundMechanism, epsilon

DELTA = DIGITS_DELTA

DIGITS = DIGITS_1000
DIGITS_DP = ["privacy.mode=central", "privacy.clip=0.5"]
DIGITS_ROWS: list[tuple[str, list[str]]] = [
    ("FedAvgM, no DP", []),
    ("DP, clipping only (z = 0)", [*DIGITS_DP, "privacy.noise_multiplier=0"]),
    *[(f"DP, z = {z:g}", [*DIGITS_DP, f"privacy.noise_multiplier={z}"]) for z in (0.5, 1.0, 2.0, 4.0, 8.0)],
    *[
        (
            f"DP, adaptive clipping, z = {z:g}",
            [*DIGITS_DP, f"privacy.noise_multiplier={z}", "privacy.adaptive_clip=true"],
        )
        for z in (1.0, 2.0)
    ],
    ("local DP, z = 1", ["privacy.mode=local", "privacy.clip=0.5", "privacy.noise_multiplier=1"]),
]

HEART = Path(__file__).resolve().parents[1] / "examples" / "heart" / "heart.toml"
HEART_DP = ["privacy.mode=central", "sampling=poisson", "privacy.clip=0.3", f"privacy.delta={DELTA}"]
HEART_ROWS: list[tuple[str, list[str]]] = [
    ("FedAvg, no DP", []),
    ("DP, clipping only (z = 0)", [*HEART_DP, "privacy.noise_multiplier=0"]),
    *[(f"DP, z = {z:g}", [*HEART_DP, f"privacy.noise_multiplier={z}"]) for z in (0.3, 1.0, 3.0, 10.0)],
]


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def run(overrides: Sequence[str], folder: str, config: Path | None = None) -> dict[str, Any]:
    """One run: its final accuracy and what it spent, by both accountants."""
    result = sheaf.simulate(config, overrides=[*overrides, "evaluation.federated=false", f"runs_dir={folder}"])
    privacy = result.history.final_privacy
    final = result.history.final_central
    row: dict[str, Any] = {"central_accuracy": final["accuracy"], "central_loss": final["loss"]}
    if privacy:
        with sheaf.RunStore.open(result.run_path, readonly=True) as store:
            plan = store.meta["privacy"]
        z = privacy["noise_multiplier"]
        rounds = int(privacy["rounds"])
        if plan["mode"] == "central":
            mechanism = RoundMechanism("poisson", z, rate=plan["sampling_rate"])
            pld = epsilon(mechanism, rounds, DELTA, "pld") if z > 0 else math.inf
        else:
            pld = math.nan  # the worst client's count is in the run; RDP only
        row.update(
            noise_multiplier=z,
            epsilon_rdp=_finite(privacy["epsilon"]),
            epsilon_pld=_finite(pld) if not math.isnan(pld) else None,
            final_clip=privacy["clip"],
            rounds=rounds,
        )
    return row


def digits(rounds: int) -> list[dict[str, Any]]:
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for label, extra in DIGITS_ROWS:
            row = run([*DIGITS, f"rounds={rounds}", *extra], folder)
            rows.append({"setting": label, **row})
            print(json.dumps(rows[-1]), flush=True, file=sys.stderr)
    return rows


def heart(seeds: int) -> list[dict[str, Any]]:
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for label, extra in HEART_ROWS:
            runs = [run([f"seed={seed}", *extra], folder, HEART) for seed in range(seeds)]
            accuracies = [r["central_accuracy"] for r in runs]
            rows.append(
                {
                    "setting": label,
                    **{k: v for k, v in runs[0].items() if k not in ("central_accuracy", "central_loss")},
                    "central_accuracy": statistics.fmean(accuracies),
                    "central_loss": statistics.fmean(r["central_loss"] for r in runs),
                    "central_accuracy_by_seed": accuracies,
                }
            )
            print(json.dumps(rows[-1]), flush=True, file=sys.stderr)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default="digits,heart", help="comma-separated parts: digits, heart")
    parser.add_argument("--digits-rounds", type=int, default=100)
    parser.add_argument("--heart-seeds", type=int, default=3)
    args = parser.parse_args()
    parts = {p.strip() for p in args.only.split(",") if p.strip()}
    out: dict[str, Any] = {
        "machine": {"python": platform.python_version(), "platform": platform.platform()},
        "delta": DELTA,
        "accountant_of_the_runs": "rdp",
    }
    if "digits" in parts:
        out["digits"] = {
            "settings": [*DIGITS, f"rounds={args.digits_rounds}", "seed=0"],
            "rows": digits(args.digits_rounds),
        }
    if "heart" in parts:
        out["heart"] = {
            "settings": [str(HEART.relative_to(HEART.parents[2])), f"seeds 0..{args.heart_seeds - 1}"],
            "rows": heart(args.heart_seeds),
        }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
