"""Fixed-seed configurations whose final params must not change when the code is reshaped.

``python -m tests.run.behaviour NAME BACKEND RUNS_DIR`` runs one and prints its digest.
"""

from __future__ import annotations

import hashlib
import sys

from sheaf.core.params import Params

#: Small runs over digits that exercise each seam: sum-only and per-update strategies, a
#: server optimiser, client steps with client state and extras, robust aggregation,
#: central and local DP (with data owners' budgets), and personal layers.
BASE = ["rounds=3", "clients=10", "fraction=0.6", "evaluation.interval=3", "threads=1", "seed=0"]
CONFIGS: dict[str, list[str]] = {
    "fedavg": [],
    "fedadam": ["strategy=fedadam", "strategy.lr=0.03"],
    "scaffold": ["strategy=scaffold"],
    "krum": ["strategy=krum", "strategy.f=1"],
    "central_dp": ["privacy.mode=central", "privacy.noise_multiplier=0.5", "privacy.clip=2.0"],
    "local_dp_budgets": [
        "privacy.mode=local",
        "privacy.noise_multiplier=0.05",
        "privacy.clip=2.0",
        "privacy.client_budget=2000",
        "strategy.min_clients=1",
    ],
    "fedper": ["strategy=fedper", "personalization.finetune_steps=2"],
}
#: backend name -> extra overrides
BACKENDS: dict[str, list[str]] = {
    "inline": ["backend=inline"],
    "pool": ["backend=pool", "engine.workers=2"],
    "ray": ["backend=ray", "engine.workers=2"],
    "vectorized": ["backend=vectorized"],
}


def digest(params: Params) -> str:
    """sha256 over each tensor's name, dtype, shape and bytes, in name order."""
    h = hashlib.sha256()
    for name in sorted(params):
        array = params[name]
        h.update(f"{name}|{array.dtype.str}|{array.shape}|".encode())
        h.update(array.tobytes())
    return h.hexdigest()


def overrides(name: str, backend: str, runs_dir: str) -> list[str]:
    """The settings of configuration ``name`` on ``backend``, storing runs in ``runs_dir``."""
    return [*BASE, *CONFIGS[name], *BACKENDS[backend], f"runs_dir={runs_dir}"]


def main() -> None:
    from sheaf.run.simulate import simulate

    name, backend, runs_dir = sys.argv[1:4]
    result = simulate(overrides=overrides(name, backend, runs_dir))
    print(digest(result.params))


if __name__ == "__main__":
    main()
