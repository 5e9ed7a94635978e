"""Client updates per second on every device here (each GPU torch sees, and the CPU), as JSON.

    python benchmarks/gpu.py                     # every scenario, device and backend
    python benchmarks/gpu.py --scenarios digits --rounds 3

Scenarios, each a cohort of 50 clients per round, 1 epoch, SGD with momentum, FedAvg:

- ``digits``: scikit-learn digits over 1,000 IID clients, MLP 64-32-10, batch 16;
- ``fmnist``: Fashion-MNIST over 100 Dirichlet(0.5) clients, ``models.cnn`` (5x5 conv 16 +
  max-pool, 5x5 conv 32 + max-pool, linear), batch 32 (skipped, saying why, where the
  Debian package is not installed);
- ``cifar``: a CIFAR-10-shaped federation on synthetic data (3x32x32 standard-normal
  images, 10 random classes, 100 clients of 100 images), ``models.cnn`` for 3x32x32, batch 32.

For each device (``cpu``, and ``cuda:N`` for every GPU; ``cuda`` with the pool: its workers
dealt over all GPUs, two per GPU), the inline, vectorized and pool backends run each
scenario through ``sheaf.simulate`` (no federated evaluation; central evaluation every
round is in ``round_s``). ``fit_s`` is the backend's ``fit`` per round (median over the
rounds after the first), ``updates_per_s`` the cohort divided by it. On a machine without
a GPU it runs on the CPU alone and says so (``"gpus": []``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from engine import Timed, _median, digits_mlp, fmnist_cnn
from torch import nn

from sheaf.backends import build_backend
from sheaf.core.config import DataConfig
from sheaf.core.errors import DataError
from sheaf.data import DatasetInfo, Federation, Split, build_federation
from sheaf.run.simulate import simulate
from sheaf.task.device import use_device
from sheaf.task.models import cnn
from sheaf.task.torch_task import TorchTask

COHORT = 50


def cifar_cnn() -> nn.Module:
    return cnn((3, 32, 32), 10)


def cifar_like(clients: int = 100, per_client: int = 100, seed: int = 0) -> Federation:
    """CIFAR-10's shapes on synthetic data: 3x32x32 standard-normal images, random labels."""
    rng = np.random.default_rng(seed)
    rows = clients * per_client
    x = rng.standard_normal((rows, 3, 32, 32), dtype=np.float32)
    y = rng.integers(0, 10, rows)
    test = Split(rng.standard_normal((2000, 3, 32, 32), dtype=np.float32), rng.integers(0, 10, 2000))
    offsets = np.arange(clients + 1, dtype=np.int64) * per_client
    train = np.full(clients, per_client, dtype=np.int64)
    info = DatasetInfo("cifar10-shaped", (3, 32, 32), 10, tuple(str(k) for k in range(10)))
    return Federation(info, x, y, offsets, train, test)


def scenarios() -> dict[str, tuple[Callable[[], Federation], Callable[[], nn.Module], dict[str, Any]]]:
    return {
        "digits": (
            lambda: build_federation(DataConfig(dataset="digits", clients=1000, partition="iid", min_samples=1), 0),
            digits_mlp,
            {"batch_size": 16, "fraction": COHORT / 1000},
        ),
        "fmnist": (
            lambda: build_federation(DataConfig(dataset="fashion_mnist", clients=100, alpha=0.5), seed=0),
            fmnist_cnn,
            {"batch_size": 32, "fraction": COHORT / 100},
        ),
        "cifar": (cifar_like, cifar_cnn, {"batch_size": 32, "fraction": COHORT / 100}),
    }


def devices() -> list[str]:
    """The CPU and every GPU torch sees."""
    return ["cpu"] + [f"cuda:{i}" for i in range(torch.cuda.device_count() if torch.cuda.is_available() else 0)]


def run(
    federation: Federation,
    model_fn: Callable[[], nn.Module],
    settings: dict[str, Any],
    device: str,
    backend: str,
    rounds: int,
) -> dict[str, Any]:
    timed = Timed(build_backend(backend))
    overrides = [f"{key}={value}" for key, value in settings.items()]
    overrides += ["epochs=1", "lr=0.05", "momentum=0.9", f"min_clients={COHORT}", "evaluation.federated=false"]
    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        result = simulate(
            overrides=[*overrides, f"rounds={rounds}", f"runs_dir={folder}", f"engine.device={device}"],
            task=TorchTask(model_fn),
            federation=federation,
            backend=timed,  # type: ignore[arg-type]
        )
    use_device("cpu")
    fit = _median(timed.fit_seconds)
    return {
        "device": device,
        "backend": backend,
        "runs_on": timed.chosen,
        "fit_s": fit,
        "round_s": _median([r.seconds for r in result.history]),
        "updates_per_s": round(COHORT / fit, 1),
        "wall_s": round(time.perf_counter() - started, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenarios", default="digits,fmnist,cifar")
    parser.add_argument("--backends", default="inline,vectorized,pool")
    parser.add_argument("--rounds", type=int, default=4, help="rounds per run (the first is warm-up)")
    parser.add_argument("--devices", default="", help="comma-separated (default: cpu and every GPU)")
    args = parser.parse_args()
    here = args.devices.split(",") if args.devices else devices()
    gpus = [d for d in here if d.startswith("cuda")]
    report: dict[str, Any] = {
        "machine": {
            "cores": len(os.sched_getaffinity(0)),
            "load_average_at_start": [round(v, 2) for v in os.getloadavg()],
            "python": platform.python_version(),
            "torch": torch.__version__,
            "gpus": [torch.cuda.get_device_name(int(d.split(":")[1])) for d in gpus],
        },
        "command": " ".join(["python", "benchmarks/gpu.py", *sys.argv[1:]]),
        "results": [],
    }
    if not gpus:
        report["note"] = "no CUDA GPU found: CPU rows only"
        print("no CUDA GPU found: measuring the CPU only", file=sys.stderr)
    table = scenarios()
    for name in args.scenarios.split(","):
        make, model_fn, settings = table[name]
        try:
            federation = make()
        except DataError as exc:
            report["results"].append({"scenario": name, "skipped": str(exc)})
            continue
        for device in here:
            for backend in args.backends.split(","):
                row = {"scenario": name, **run(federation, model_fn, settings, device, backend, args.rounds)}
                report["results"].append(row)
                print(json.dumps(row), file=sys.stderr, flush=True)
        if len(gpus) > 1 and "pool" in args.backends:  # the pool's workers dealt over every GPU
            row = {"scenario": name, **run(federation, model_fn, settings, "cuda", "pool", args.rounds)}
            report["results"].append(row)
    report["load_average_at_end"] = [round(v, 2) for v in os.getloadavg()]
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
