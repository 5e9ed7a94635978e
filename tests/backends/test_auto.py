"""The auto backend (the default) picks vectorized, pool or inline, and says which and why."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from sheaf.backends.auto import AutoBackend, describe_backend
from sheaf.backends.base import SimulationEnv
from sheaf.backends.vectorized import forward_flops
from sheaf.core.config import EngineConfig
from sheaf.run.simulate import simulate
from sheaf.run.store import RunStore
from sheaf.task import models
from sheaf.task.torch_task import TorchTask
from tests.backends.tasks import SMALL, Crashing, digits, mlp_task


def wide_model() -> nn.Module:
    return nn.Sequential(nn.Linear(64, 8192), nn.ReLU(), nn.Linear(8192, 10))


WIDE_FLOPS = 2 * (64 * 8192 + 8192 * 10)  # two multiply-adds per weight


def chosen(task: object, workers: int = 0, cohort: int = 0) -> tuple[str, str]:
    backend = AutoBackend()
    engine = EngineConfig(workers=workers)
    backend.start(SimulationEnv(task, digits(), seed=0, engine=engine, cohort_size=cohort))  # type: ignore[arg-type]
    try:
        return describe_backend(backend)
    finally:
        backend.close()


def test_a_small_torch_model_is_vectorised() -> None:
    name, why = chosen(mlp_task())
    assert name == "vectorized"
    assert f"small model ({2 * (64 * 16 + 16 * 10):,} FLOPs per sample)" in why


def test_a_big_model_goes_to_the_pool_when_there_are_cores() -> None:
    name, why = chosen(TorchTask(wide_model), workers=2)
    assert name == "pool"
    assert "not small" in why and why.endswith("2 cores for workers; 2 workers x 1 torch thread")


def test_with_one_core_or_a_task_that_cannot_travel_it_runs_inline() -> None:
    assert chosen(TorchTask(wide_model), workers=1) == (
        "inline",
        f"the model is not small ({WIDE_FLOPS:,} FLOPs per sample > 1,000,000); "
        "only 1 worker would fit this machine's cores",
    )
    name, why = chosen(TorchTask(lambda: wide_model()), workers=2)
    assert name == "inline" and "cannot be sent to worker processes" in why


def test_few_clients_or_little_work_per_round_run_inline() -> None:
    name, why = chosen(mlp_task(), workers=2, cohort=4)
    assert name == "inline"
    assert "4 clients per round are too few to batch (fewer than 8)" in why
    assert "too little to spread over processes" in why
    assert chosen(mlp_task(), workers=2, cohort=8)[0] == "vectorized"
    assert chosen(TorchTask(wide_model), workers=2, cohort=10)[0] == "pool"  # ~2 GFLOP a round


def test_a_task_that_is_not_a_torch_task_goes_to_the_pool() -> None:
    name, why = chosen(Crashing(0, 0, "raise"), workers=2)
    assert name == "pool" and "not a TorchTask" in why


def test_the_choice_is_recorded_in_the_run_store(tmp_path: Path) -> None:
    result = simulate(overrides=[*SMALL, f"runs_dir={tmp_path}"], task=mlp_task(), federation=digits())
    assert result.config.backend == "auto"
    assert result.backend == "vectorized" == result.summary()["backend"]
    with RunStore.open(result.run_path, readonly=True) as store:
        assert store.meta["backend"] == "vectorized"
        assert "small model" in store.meta["backend_reason"]


@pytest.mark.parametrize("name", ["inline", "vectorized"])
def test_the_configured_backend_is_recorded_as_configured(tmp_path: Path, name: str) -> None:
    result = simulate(
        overrides=[*SMALL, f"runs_dir={tmp_path}", f"backend={name}"], task=mlp_task(), federation=digits()
    )
    with RunStore.open(result.run_path, readonly=True) as store:
        assert (store.meta["backend"], store.meta["backend_reason"]) == (name, "as configured")


@pytest.mark.parametrize(
    ("model", "shape"),
    [
        (lambda: models.mlp(64, (64, 32), 10), (64,)),
        (lambda: models.logistic_regression(16, 2), (16,)),
        (lambda: models.cnn((1, 28, 28), 10), (1, 28, 28)),
        (lambda: models.cnn((3, 32, 32), 10), (3, 32, 32)),
        (lambda: nn.Sequential(nn.Conv1d(4, 8, 3, groups=2), nn.AdaptiveAvgPool1d(1), nn.Flatten()), (4, 20)),
    ],
    ids=["mlp", "logistic", "cnn-28", "cnn-32", "grouped-conv1d"],
)
def test_flops_of_standard_layers_are_counted_as_torchs_flop_counter_counts_them(
    model: Callable[[], nn.Module], shape: tuple[int, ...]
) -> None:
    from torch.utils.flop_counter import FlopCounterMode

    task = TorchTask(model)
    sample = np.zeros((1, *shape), np.float32)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        task.model(torch.from_numpy(sample))
    assert forward_flops(task, sample) == counter.get_total_flops()
