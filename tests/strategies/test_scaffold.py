"""SCAFFOLD: the server half by hand, the client half (option II) on a task with a known gradient."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sheaf.core.config import TrainConfig
from sheaf.core.errors import ClientFailure
from sheaf.core.params import Params
from sheaf.core.update import Update
from sheaf.data.dataset import ClientData, Split
from sheaf.strategies.base import RoundContext
from sheaf.strategies.scaffold import scaffold
from sheaf.task.base import EvalResult, FitInstructions, FitResult
from sheaf.task.client import fit_client
from sheaf.task.torch_task import TorchTask

GRADIENT = np.array([0.5, -2.0])


class ConstantGradient:
    """Plain local SGD on a loss whose gradient is always GRADIENT, honouring the correction."""

    def init_params(self, seed: int) -> Params:
        return Params({"w": np.zeros(2)})

    def fit(self, params: Params, data: Split, instructions: FitInstructions) -> FitResult:
        w = params["w"].copy()
        correction = instructions.payload.get("gradient_correction", Params({"w": np.zeros(2)}))["w"]
        steps = 4
        for _ in range(steps):
            w -= instructions.train.lr * (GRADIENT + correction)
        return FitResult(Params({"w": w}), len(data), {"steps": float(steps)})

    def evaluate(self, params: Params, data: Split) -> EvalResult:
        return EvalResult(0.0, len(data))


def client(cid: int = 3) -> ClientData:
    return ClientData(
        cid, Split(np.zeros((6, 1), np.float32), np.zeros(6, np.int64)), Split(np.zeros((0, 1)), np.zeros(0))
    )


def fit_scaffold(server: np.ndarray, own: np.ndarray | None, train: TrainConfig) -> tuple[Update, dict[str, Params]]:
    state = {"scaffold": Params({"w": own})} if own is not None else None
    update, new_state = fit_client(
        ConstantGradient(),
        client(),
        Params({"w": np.ones(2)}),
        round=1,
        train=train,
        run_seed=0,
        payload={"scaffold": Params({"w": server})},
        steps=scaffold().client_steps,
        client_state=state,
    )
    assert new_state is not None
    return update, dict(new_state)


def test_the_client_corrects_each_step_by_c_minus_ci_and_option_ii_recovers_the_mean_gradient() -> None:
    server, own = np.array([1.0, 1.0]), np.array([0.25, 0.0])
    update, state = fit_scaffold(server, own, TrainConfig(lr=0.1, momentum=0.0))
    # 4 steps of 0.1 * (g + c - c_i)
    np.testing.assert_allclose(update.delta["w"], -0.4 * (GRADIENT + server - own))
    # option II: c_i+ = c_i - c + (x - y) / (K lr) = g for a constant gradient
    np.testing.assert_allclose(state["scaffold"]["w"], GRADIENT)
    np.testing.assert_allclose(update.extras["scaffold"]["w"], GRADIENT - own)


def test_a_client_starts_with_a_zero_control_variate() -> None:
    update, state = fit_scaffold(np.array([1.0, 1.0]), None, TrainConfig(lr=0.1, momentum=0.0))
    np.testing.assert_allclose(update.extras["scaffold"]["w"], GRADIENT)
    np.testing.assert_allclose(state["scaffold"]["w"], GRADIENT)


def test_with_momentum_the_step_size_is_the_effective_rate() -> None:
    _, state = fit_scaffold(np.zeros(2), None, TrainConfig(lr=0.1, momentum=0.5))
    # the toy task ignores momentum: (x - y) / (K * 0.1 / 0.5) = g / 2
    np.testing.assert_allclose(state["scaffold"]["w"], GRADIENT / 2)


def test_scaffold_refuses_adam_clients_with_a_clear_failure() -> None:
    with pytest.raises(ClientFailure, match="SCAFFOLD assumes local SGD; set train.optimizer=sgd"):
        fit_scaffold(np.zeros(2), None, TrainConfig(optimizer="adam"))


def test_the_server_averages_uniformly_and_moves_c_by_the_sum_over_all_clients() -> None:
    strategy = scaffold(lr=0.5)
    start = Params({"w": np.zeros(2)})
    updates = [
        Update(0, Params({"w": np.array([1.0, 0.0])}), 1, {}, {"scaffold": Params({"w": np.array([1.0, 1.0])})}),
        Update(1, Params({"w": np.array([3.0, 2.0])}), 99, {}, {"scaffold": Params({"w": np.array([3.0, -1.0])})}),
        Update(2, Params({"w": np.array([7.0, 7.0])}), 0, {}, {"scaffold": Params({"w": np.array([9.0, 9.0])})}),
    ]
    new, state, _ = strategy.aggregate(updates, strategy.init(start), RoundContext(1, start, 0, population=8))
    np.testing.assert_allclose(new["w"], 0.5 * np.array([2.0, 1.0]))  # uniform, not by examples
    options, payload = strategy.configure(state, RoundContext(2, new, 0, 8))
    assert options == {} and [step.name for step in strategy.client_steps] == ["scaffold"]
    np.testing.assert_allclose(payload["scaffold"]["w"], np.array([4.0, 0.0]) / 8)  # c moved by (2/8) * mean


def test_torchtask_adds_the_gradient_correction_to_every_step() -> None:
    task = TorchTask(lambda: torch.nn.Linear(2, 1), loss_fn=lambda out, y: 0.0 * out.sum())
    start = task.init_params(0)
    correction = start.map(lambda a: np.full_like(a, 1.0))
    data = Split(np.ones((32, 2), np.float32), np.zeros(32, np.int64))
    train = TrainConfig(epochs=1, batch_size=10, lr=0.1, momentum=0.0)
    result = task.fit(start, data, FitInstructions(1, 0, train, 5, payload={"gradient_correction": correction}))
    # zero data gradient: 4 mini-batches, each moves every weight by -0.1 * 1
    assert result.metrics["steps"] == 4
    for name in start:
        np.testing.assert_allclose(result.params[name], start[name] - 0.4, rtol=1e-6)
