"""FedNova and q-FedAvg: server halves by hand, client halves through fit_client and TorchTask."""

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
from sheaf.strategies.fedavg import fedavg
from sheaf.strategies.fednova import fednova
from sheaf.strategies.qfedavg import qfedavg
from sheaf.task.client import fit_client
from sheaf.task.torch_task import TorchTask


def p(value: float) -> Params:
    return Params({"w": np.array([value])})


def agg(strategy: object, updates: list[Update]) -> float:
    start = p(0.0)
    new, _, _ = strategy.aggregate(updates, strategy.init(start), RoundContext(1, start, 0, 10))  # type: ignore[attr-defined]
    return float(new["w"][0])


def test_fednova_normalises_by_each_clients_steps() -> None:
    # p = (1/4, 3/4); a = (2, 6); tau_eff = 0.5 + 4.5 = 5; delta = 5 * (0.25 * 4/2 + 0.75 * 6/6) = 6.25
    updates = [Update(0, p(4.0), 10, {"fednova_norm": 2.0}), Update(1, p(6.0), 30, {"fednova_norm": 6.0})]
    assert agg(fednova(), updates) == pytest.approx(6.25)
    # FedAvg would give 0.25 * 4 + 0.75 * 6 = 5.5, pulled towards the client with more steps
    assert agg(fedavg(), updates) == pytest.approx(5.5)


def test_fednova_with_equal_steps_is_fedavg() -> None:
    updates = [Update(i, p(v), n, {"fednova_norm": 3.0}) for i, (v, n) in enumerate([(1.0, 5), (-2.0, 7), (4.0, 1)])]
    assert agg(fednova(), updates) == pytest.approx(agg(fedavg(), updates))


def test_qfedavg_by_hand() -> None:
    # L = 10, q = 2. Client 0: F = 1, delta 0.1 -> dW = -1, h = 2*1*1 + 10*1 = 12, num = 1*10*0.1 = 1.
    # Client 1: F = 3, delta -0.2 -> dW = 2, h = 2*3*4 + 10*9 = 114, num = 9*10*-0.2 = -18.
    updates = [
        Update(0, p(0.1), 5, {"qffl_loss": 1.0, "qffl_lipschitz": 10.0}),
        Update(1, p(-0.2), 500, {"qffl_loss": 3.0, "qffl_lipschitz": 10.0}),
    ]
    assert agg(qfedavg(q=2.0), updates) == pytest.approx(-17 / 126)


def test_qfedavg_with_q_zero_is_the_unweighted_mean() -> None:
    updates = [
        Update(i, p(v), n, {"qffl_loss": 1 + i, "qffl_lipschitz": 20.0})
        for i, (v, n) in enumerate([(1.0, 1), (3.0, 99)])
    ]
    assert agg(qfedavg(q=0.0), updates) == pytest.approx(2.0)


def test_qfedavg_stays_finite_for_a_client_at_zero_loss() -> None:
    updates = [
        Update(0, p(0.5), 1, {"qffl_loss": 0.0, "qffl_lipschitz": 10.0}),
        Update(1, p(1.0), 1, {"qffl_loss": 1.0, "qffl_lipschitz": 10.0}),
    ]
    assert np.isfinite(agg(qfedavg(q=0.5), updates))


def model() -> torch.nn.Module:
    return torch.nn.Linear(3, 2)


def client_data(n: int) -> ClientData:
    rng = np.random.default_rng(n)
    train = Split(rng.random((n, 3), dtype=np.float32), np.arange(n) % 2)
    return ClientData(1, train, train)


def test_the_fednova_client_step_reports_the_norm_for_its_momentum() -> None:
    task = TorchTask(model)
    train = TrainConfig(epochs=1, batch_size=4, momentum=0.5)
    update, _ = fit_client(
        task,
        client_data(10),
        task.init_params(0),
        round=1,
        train=train,
        run_seed=0,
        steps=fednova().client_steps,
    )
    steps = update.metrics["steps"]
    assert steps == 3
    assert update.metrics["fednova_norm"] == pytest.approx((3 - 0.5 * (1 - 0.5**3) / 0.5) / 0.5)


def test_fednova_refuses_adam_clients() -> None:
    task = TorchTask(model)
    with pytest.raises(ClientFailure, match="FedNova assumes local SGD"):
        fit_client(
            task,
            client_data(10),
            task.init_params(0),
            round=1,
            train=TrainConfig(optimizer="adam"),
            run_seed=0,
            steps=fednova().client_steps,
        )


def test_the_qffl_client_step_reports_its_loss_at_the_global_model_before_training() -> None:
    task = TorchTask(model)
    start = task.init_params(0)
    data = client_data(12)
    train = TrainConfig(lr=0.05, momentum=0.0)
    update, _ = fit_client(task, data, start, round=1, train=train, run_seed=0, steps=qfedavg().client_steps)
    assert update.metrics["qffl_loss"] == pytest.approx(task.evaluate(start, data.train).loss)
    assert update.metrics["qffl_lipschitz"] == pytest.approx(20.0)
    assert update.metrics["train_loss"] != update.metrics["qffl_loss"]
