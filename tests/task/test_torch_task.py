from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pytest
import torch
from torch import nn

from sheaf.core.config import TrainConfig
from sheaf.core.errors import ClientFailure, TaskError
from sheaf.core.params import Params
from sheaf.data.dataset import ClientData, Split
from sheaf.task.base import FitInstructions, Task
from sheaf.task.client import evaluate_client, fit_client
from sheaf.task.models import mlp
from sheaf.task.torch_task import TorchTask


def make_model() -> nn.Module:
    return nn.Sequential(nn.Linear(6, 8), nn.Dropout(0.2), nn.ReLU(), nn.Linear(8, 3))


def data(seed: int, n: int = 40) -> Split:
    rng = np.random.default_rng(seed)
    return Split(rng.normal(size=(n, 6)).astype(np.float32), rng.integers(0, 3, n))


def instructions(seed: int = 1, **train: object) -> FitInstructions:
    return FitInstructions(1, 0, TrainConfig(**train), seed)  # type: ignore[arg-type]


def test_init_params_depend_only_on_the_seed() -> None:
    task = TorchTask(make_model)
    assert task.init_params(5).array_equal(TorchTask(make_model).init_params(5))
    assert not task.init_params(5).array_equal(task.init_params(6))


def test_training_depends_only_on_params_data_and_seed_not_on_what_ran_before() -> None:
    task = TorchTask(make_model)
    start = task.init_params(0)
    first = task.fit(start, data(1), instructions(7)).params
    task.fit(start, data(2), instructions(99))  # another client in between, other RNG use
    torch.manual_seed(1234)
    again = task.fit(start, data(1), instructions(7)).params
    assert first.array_equal(again)
    assert not first.array_equal(task.fit(start, data(1), instructions(8)).params)


def test_training_lowers_the_loss() -> None:
    task = TorchTask(make_model)
    split = data(3, n=200)
    start = task.init_params(0)
    trained = task.fit(start, split, instructions(epochs=20, lr=0.1, momentum=0.0)).params
    assert task.evaluate(trained, split).loss < task.evaluate(start, split).loss


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_the_lean_optimiser_matches_torch_optim(optimizer: str) -> None:
    def torch_optimizer(params: list[nn.Parameter], cfg: TrainConfig) -> torch.optim.Optimizer:
        if cfg.optimizer == "adam":
            return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)

    lean = TorchTask(make_model)
    reference = TorchTask(make_model, optimizer_fn=torch_optimizer)
    start = lean.init_params(0)
    how = instructions(3, optimizer=optimizer, epochs=3, lr=0.01, momentum=0.9, weight_decay=0.01)
    a, b = lean.fit(start, data(4), how).params, reference.fit(start, data(4), how).params
    for name in a:
        np.testing.assert_allclose(a[name], b[name], rtol=1e-5, atol=1e-6)


def test_a_custom_training_loop_replaces_the_standard_one() -> None:
    def scale_weights(
        model: nn.Module, split: Split, how: FitInstructions, rng: np.random.Generator
    ) -> Mapping[str, float]:
        with torch.no_grad():
            for p in model.parameters():
                p.mul_(2.0)
        return {"rows": float(len(split))}

    task = TorchTask(make_model, train_fn=scale_weights)
    start = task.init_params(0)
    result = task.fit(start, data(0, n=12), instructions())
    assert result.metrics == {"rows": 12.0}
    assert result.params.array_equal(start * 2.0)


def test_evaluate_reports_loss_and_accuracy() -> None:
    task = TorchTask(make_model)
    result = task.evaluate(task.init_params(0), data(5))
    assert result.num_examples == 40
    assert 0 <= result.metrics["accuracy"] <= 1
    assert result.loss > 0


def test_params_of_another_model_are_refused() -> None:
    task = TorchTask(make_model)
    with pytest.raises(TaskError, match="do not match the model"):
        task.fit(Params({"w": np.zeros(2, np.float32)}), data(0), instructions())


def test_model_fn_must_build_a_module() -> None:
    with pytest.raises(TaskError, match="must return a torch.nn.Module"):
        TorchTask(lambda: "not a model").fit(Params({}), data(0), instructions())  # type: ignore[arg-type,return-value]


def test_a_task_survives_pickling_without_its_cached_model() -> None:
    import functools
    import pickle

    task = TorchTask(functools.partial(mlp, 6, (4,), 3))
    task.init_params(0)
    task.evaluate(task.init_params(0), data(0))
    clone = pickle.loads(pickle.dumps(task))
    assert clone.evaluate(clone.init_params(0), data(0)) == task.evaluate(task.init_params(0), data(0))


class BrokenTask:
    def init_params(self, seed: int) -> Params:
        return Params({"w": np.zeros(2)})

    def fit(self, params: Params, data: Split, instructions: FitInstructions) -> object:
        raise RuntimeError("disk full")

    def evaluate(self, params: Params, data: Split) -> object:
        raise ValueError("no labels")


def test_failures_in_user_code_become_client_failures() -> None:
    task: Task = BrokenTask()  # type: ignore[assignment]
    client = ClientData(4, data(0), data(1))
    with pytest.raises(ClientFailure, match="client 4: fit failed: RuntimeError: disk full"):
        fit_client(task, client, task.init_params(0), round=1, train=TrainConfig(), run_seed=0)
    with pytest.raises(ClientFailure, match="client 4: evaluate failed: ValueError: no labels"):
        evaluate_client(task, client, task.init_params(0))


def test_fit_client_returns_the_delta_and_the_clients_weight() -> None:
    task = TorchTask(make_model)
    start = task.init_params(0)
    client = ClientData(2, data(0, n=30), data(1, n=5))
    update, state = fit_client(task, client, start, round=3, train=TrainConfig(), run_seed=11)
    assert state is None
    assert update.client_id == 2
    assert update.num_examples == 30
    assert "train_loss" in update.metrics
    trained = start + update.delta
    assert not trained.array_equal(start)


def test_the_proximal_term_pulls_training_towards_the_global_model() -> None:
    task = TorchTask(make_model)
    start = task.init_params(0)
    split = data(3, n=80)

    def distance(mu: float) -> float:
        how = FitInstructions(1, 0, TrainConfig(epochs=5, lr=0.1, momentum=0.0), 7, {"proximal_mu": mu})
        return (task.fit(start, split, how).params - start).l2_norm()

    assert distance(1.0) < distance(0.1) < distance(0.0)
    plain = task.fit(start, split, FitInstructions(1, 0, TrainConfig(), 7)).params
    zero = task.fit(start, split, FitInstructions(1, 0, TrainConfig(), 7, {"proximal_mu": 0.0})).params
    assert plain.array_equal(zero)


def test_the_standard_loop_reports_its_optimiser_steps() -> None:
    task = TorchTask(make_model)
    result = task.fit(task.init_params(0), data(0, n=25), instructions(epochs=3, batch_size=10))
    assert result.metrics["steps"] == 9.0


def test_fedprox_is_refused_with_a_negative_mu() -> None:
    from sheaf.core.errors import ConfigError
    from sheaf.strategies import fedprox

    with pytest.raises(ConfigError, match="strategy.mu must be >= 0 for FedProx, got -1"):
        fedprox(mu=-1)
