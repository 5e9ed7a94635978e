"""Ditto: the global half is FedAvg's; the personal model follows the proximal objective and stays home.

Ditto was added in its own module (``sheaf.strategies.ditto``) without touching the round
loop, the backends or another strategy: these tests run it through the real loop on every
simulation backend and through TorchTask's own loop.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from sheaf.backends.inline import InlineBackend
from sheaf.backends.pool import PoolBackend
from sheaf.core.config import TrainConfig
from sheaf.core.params import Params
from sheaf.data.dataset import ClientData, Split
from sheaf.run.simulate import simulate
from sheaf.strategies.ditto import DITTO_KEY, ditto
from sheaf.task.base import FitInstructions
from sheaf.task.client import fit_client
from sheaf.task.client_steps import PROXIMAL_ANCHOR
from sheaf.task.torch_task import TorchTask
from tests.backends.tasks import SMALL, digits, mlp_task


def linear() -> torch.nn.Module:
    return torch.nn.Linear(3, 2)


def data(n: int = 8) -> ClientData:
    rng = np.random.default_rng(1)
    split = Split(rng.random((n, 3), dtype=np.float32), np.arange(n) % 2)
    return ClientData(5, split, Split(split.x[:2], split.y[:2]))


def test_torchtask_pulls_towards_the_proximal_anchor_it_is_sent() -> None:
    task = TorchTask(linear)
    start = task.init_params(0)
    anchor = start.map(lambda a: np.full_like(a, 3.0))
    train = TrainConfig(epochs=1, batch_size=8, lr=0.1, momentum=0.0)  # one SGD step
    plain = task.fit(start, data().train, FitInstructions(1, 5, train, 7)).params
    pulled = task.fit(
        start,
        data().train,
        FitInstructions(1, 5, train, 7, options={"proximal_mu": 0.5}, payload={PROXIMAL_ANCHOR: anchor}),
    ).params
    for name in start:  # one step: w - lr * (grad + mu * (w - anchor))
        expected = plain[name] - 0.1 * 0.5 * (start[name] - anchor[name])
        np.testing.assert_allclose(pulled[name], expected, rtol=1e-5, atol=1e-6)


def fit_ditto(task: TorchTask, start: Params, lam: float, state: dict[str, Params] | None = None):  # type: ignore[no-untyped-def]
    strategy = ditto(lam=lam)
    return fit_client(
        task,
        data(),
        start,
        round=1,
        train=TrainConfig(epochs=2, batch_size=4, lr=0.1),
        run_seed=0,
        options=dict(strategy.client_options),
        client_state=state,
        steps=strategy.client_steps,
    )


def test_the_global_half_is_the_fedavg_update_and_the_personal_model_stays_on_the_client() -> None:
    task = TorchTask(linear)
    start = task.init_params(0)
    update, state = fit_ditto(task, start, lam=0.1)
    plain, _ = fit_client(task, data(), start, round=1, train=TrainConfig(epochs=2, batch_size=4, lr=0.1), run_seed=0)
    assert update.delta.array_equal(plain.delta)  # what is sent is FedAvg's client update
    assert set(update.extras) == set() and DITTO_KEY not in update.metrics
    assert state is not None and state[DITTO_KEY].same_structure(start)
    assert not state[DITTO_KEY].array_equal(start + update.delta)  # its own pass, its own model


def test_lambda_pulls_the_personal_model_towards_the_global_one() -> None:
    task = TorchTask(linear)
    start = task.init_params(0)
    far = {DITTO_KEY: start.map(lambda a: a + 5.0)}  # a personal model far from the global one

    def distance(lam: float) -> float:
        _, state = fit_ditto(task, start, lam, far)
        assert state is not None
        return float((state[DITTO_KEY] - start).l2_norm())

    loose, tight = distance(0.0), distance(2.0)
    assert tight < loose  # the proximal term pulls v towards w


def test_a_round_trains_the_personal_model_from_where_the_last_one_left_it() -> None:
    task = TorchTask(linear)
    start = task.init_params(0)
    _, first = fit_ditto(task, start, lam=0.0)
    assert first is not None
    _, second = fit_ditto(task, start, lam=0.0, state=dict(first))
    assert second is not None
    _, fresh = fit_ditto(task, start, lam=0.0)
    assert fresh is not None and not second[DITTO_KEY].array_equal(fresh[DITTO_KEY])


def run(tmp_path: Path, backend: object, *extra: str):  # type: ignore[no-untyped-def]
    return simulate(
        overrides=[*SMALL, f"runs_dir={tmp_path}", "strategy=ditto", "strategy.lam=0.1", *extra],
        task=mlp_task(),
        federation=digits(partition="dirichlet"),
        backend=backend,  # type: ignore[arg-type]
    )


def test_ditto_runs_through_the_unchanged_loop_and_reports_personalised_accuracy(tmp_path: Path) -> None:
    result = run(tmp_path, InlineBackend())
    personal = result.history[-1].federated["personalized_accuracy"]
    assert 0.0 < personal["weighted_mean"] <= 1.0
    assert "accuracy" in result.history[-1].federated  # the global model, beside it


@pytest.mark.e2e
def test_the_pool_gives_the_inline_model_and_personal_figures_bit_for_bit(tmp_path: Path) -> None:
    inline = run(tmp_path / "inline", InlineBackend())
    pool = run(tmp_path / "pool", PoolBackend(workers=2))
    assert pool.params.array_equal(inline.params)
    assert list(pool.history) == list(inline.history)
