"""The vectorized backend: what it vectorises, how it falls back, and that it matches inline."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from sheaf.backends import vectorized as vectorized_module
from sheaf.backends.base import Cohort, SimulationEnv
from sheaf.backends.inline import InlineBackend
from sheaf.backends.vectorized import VectorizedBackend, vectorize_reason
from sheaf.core.config import TrainConfig
from sheaf.core.params import Params
from sheaf.data.dataset import Federation
from sheaf.run.simulate import simulate
from sheaf.strategies.aggregate import weighted_mean
from sheaf.strategies.base import Broadcast, EmptyState, RoundContext, chain, client_side
from sheaf.task.torch_task import TorchTask
from tests.backends.tasks import SMALL, digits, mlp_task, small_mlp


def dropout_model() -> nn.Module:
    return nn.Sequential(nn.Linear(64, 16), nn.Dropout(0.5), nn.ReLU(), nn.Linear(16, 10))


def batchnorm_model() -> nn.Module:
    return nn.Sequential(nn.Linear(64, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 10))


def own_loop(model: nn.Module, data: object, instructions: object, rng: object) -> dict[str, float]:
    return {}


class NumpyTask:
    def init_params(self, seed: int) -> Params:
        return Params({"w": np.zeros(3)})


@pytest.mark.parametrize(
    ("task", "reason"),
    [
        (NumpyTask(), "the task is a NumpyTask, not a TorchTask"),
        (TorchTask(small_mlp, train_fn=own_loop), "the task has its own train_fn"),
        (TorchTask(small_mlp, optimizer_fn=lambda p, c: None), "own optimizer_fn"),  # type: ignore[arg-type,return-value]
        (TorchTask(batchnorm_model), "the model has buffers"),
        (TorchTask(dropout_model), "cannot be trained under torch.func.vmap"),
    ],
)
def test_what_cannot_be_vectorised_is_named(task: object, reason: str) -> None:
    found = vectorize_reason(task, digits())  # type: ignore[arg-type]
    assert found is not None and reason in found, found


def test_a_plain_torch_task_is_vectorised() -> None:
    assert vectorize_reason(mlp_task(), digits()) is None


def test_an_unvectorisable_task_falls_back_saying_why_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    overrides = [*SMALL, f"runs_dir={tmp_path}"]
    with caplog.at_level(logging.WARNING, "sheaf.backends"):
        fell_back = simulate(
            overrides=overrides, task=TorchTask(dropout_model), federation=digits(), backend=VectorizedBackend()
        )
    inline = simulate(overrides=overrides, task=TorchTask(dropout_model), federation=digits(), backend=InlineBackend())
    assert fell_back.params.array_equal(inline.params)
    said = [r.getMessage() for r in caplog.records if "cannot vectorise" in r.getMessage()]
    assert len(said) == 1  # three rounds, said once
    assert "cannot be trained under torch.func.vmap" in said[0]


def _payload(state: EmptyState, ctx: RoundContext) -> Broadcast:
    return Broadcast({}, {"control": Params({"c": np.zeros(2, np.float32)})})


def test_a_cohort_with_a_payload_falls_back_and_says_so(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    strategy = chain(weighted_mean(), client_side("sends", configure=_payload), name="with-payload")
    overrides = [*SMALL, f"runs_dir={tmp_path}"]
    with caplog.at_level(logging.WARNING, "sheaf.backends"):
        result = simulate(
            overrides=overrides, task=mlp_task(), federation=digits(), strategy=strategy, backend=VectorizedBackend()
        )
    inline = simulate(
        overrides=overrides, task=mlp_task(), federation=digits(), strategy=strategy, backend=InlineBackend()
    )
    assert result.params.array_equal(inline.params)
    said = [r.getMessage() for r in caplog.records if "sends tensors to its clients (control)" in r.getMessage()]
    assert len(said) == 1  # three rounds, said once


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("scaffold", "clients run client steps (scaffold)"),
        ("fednova", "clients run client steps (fednova)"),
        ("qfedavg", "clients run client steps (qffl)"),
        ("fedper", "clients run client steps (fedper)"),
    ],
)
def test_strategies_with_client_steps_fall_back_once_and_match_inline(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, name: str, why: str
) -> None:
    # SCAFFOLD's corrections, FedNova's and q-FFL's client halves, FedPer's personal heads:
    # run by fit_client on the fallback, so the model is inline's bit for bit.
    overrides = [*SMALL, f"runs_dir={tmp_path}", f"strategy={name}"]
    with caplog.at_level(logging.WARNING, "sheaf.backends"):
        result = simulate(overrides=overrides, task=mlp_task(), federation=digits(), backend=VectorizedBackend())
    inline = simulate(overrides=overrides, task=mlp_task(), federation=digits(), backend=InlineBackend())
    assert result.params.array_equal(inline.params)
    assert list(result.history) == list(inline.history)
    said = [r.getMessage() for r in caplog.records if r.name == "sheaf.backends"]
    assert len(said) == 1, said  # three rounds and a personalised evaluation, said once
    assert why in said[0] and "train one by one instead" in said[0]


def env(federation: Federation | None = None) -> SimulationEnv:
    return SimulationEnv(mlp_task(), federation or digits(), seed=0)


def cohort(ids: list[int], *, reduce: bool = False, **train: object) -> Cohort:
    return Cohort(1, ids, mlp_task().init_params(0), TrainConfig(**train), reduce=reduce)  # type: ignore[arg-type]


@pytest.mark.parametrize("reduce", [False, True])
def test_small_chunks_give_the_same_results_as_one_chunk(monkeypatch: pytest.MonkeyPatch, reduce: bool) -> None:
    ids = list(range(10))
    with VectorizedBackend() as whole:
        whole.start(env())
        one = whole.fit(cohort(ids, reduce=reduce, epochs=2, batch_size=7))
    monkeypatch.setattr(VectorizedBackend, "_chunk_size", lambda self, cohort: 3)
    with VectorizedBackend() as chunked:
        chunked.start(env())
        many = chunked.fit(cohort(ids, reduce=reduce, epochs=2, batch_size=7))
    if reduce:
        assert one.summed is not None and many.summed is not None
        for name, value in one.summed.total().items():
            np.testing.assert_allclose(many.summed.total()[name], value, rtol=1e-5, atol=1e-6)
        assert [r.client_id for r in one.reports] == [r.client_id for r in many.reports] == ids
    else:
        for a, b in zip(one.updates, many.updates, strict=True):
            assert a.client_id == b.client_id and a.metrics == pytest.approx(b.metrics)
            for name, value in a.delta.items():
                np.testing.assert_allclose(b.delta[name], value, rtol=1e-5, atol=1e-6)


def test_a_client_without_training_rows_reports_what_torch_task_does() -> None:
    fed = digits()
    counts = fed.train_counts.copy()
    counts[3] = 0
    empty = Federation(fed.info, fed.x, fed.y, fed.offsets, counts, fed.central_test)
    with VectorizedBackend() as vectorized, InlineBackend() as inline:
        vectorized.start(env(empty))
        inline.start(env(empty))
        mine, theirs = vectorized.fit(cohort([2, 3, 4])), inline.fit(cohort([2, 3, 4]))
    got, want = mine.updates[1], theirs.updates[1]
    assert (got.client_id, got.num_examples, got.metrics["steps"]) == (3, 0, 0.0)
    assert np.isnan(got.metrics["train_loss"]) and np.isnan(want.metrics["train_loss"])
    assert got.delta.array_equal(want.delta)


@pytest.mark.parametrize("reduce", [False, True])
def test_diverging_clients_are_rejected_like_the_round_loop_rejects_them(reduce: bool) -> None:
    with VectorizedBackend() as vectorized:
        vectorized.start(env())
        outcome = vectorized.fit(cohort([0, 1, 2], reduce=reduce, lr=1e30, momentum=0.0))
    if reduce:
        assert {f.client_id for f in outcome.failures} == {0, 1, 2}
        assert all("update rejected" in f.reason and "NaN or infinite" in f.reason for f in outcome.failures)
    else:  # whole updates: the round loop checks and rejects them
        assert not all(u.delta.all_finite() for u in outcome.updates)


def test_batched_evaluation_matches_per_client_evaluation() -> None:
    fed = digits()
    params = mlp_task().init_params(3)
    with VectorizedBackend() as vectorized, InlineBackend() as inline:
        vectorized.start(env(fed))
        inline.start(env(fed))
        ids = list(range(fed.num_clients))
        mine, theirs = vectorized.evaluate(ids, params), inline.evaluate(ids, params)
    assert mine.results.keys() == theirs.results.keys()
    for cid, want in theirs.results.items():
        got = mine.results[cid]
        assert got.num_examples == want.num_examples
        assert got.loss == pytest.approx(want.loss, rel=1e-5)
        assert got.metrics == pytest.approx(want.metrics)


def smoothed_loss(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """A loss torch cannot give per sample: clients with short batches train in groups."""
    return nn.functional.cross_entropy(outputs, targets, label_smoothing=0.1)


@pytest.mark.parametrize("batched", [True, False])
@pytest.mark.parametrize("loss", [None, smoothed_loss])
def test_short_batches_match_inline_with_padding_groups_or_client_by_client(
    loss: object, batched: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not batched:  # as for a model above SMALL_FLOPS: forward and backward client after client
        monkeypatch.setattr(vectorized_module, "SMALL_FLOPS", 0)
    task = TorchTask(small_mlp, loss_fn=loss)  # type: ignore[arg-type]
    fed = digits()
    ids = list(range(fed.num_clients))
    work = Cohort(1, ids, task.init_params(0), TrainConfig(epochs=2, batch_size=7, optimizer="adam", lr=0.01))
    with VectorizedBackend() as vectorized, InlineBackend() as inline:
        vectorized.start(SimulationEnv(task, fed, seed=0))
        inline.start(SimulationEnv(task, fed, seed=0))
        mine, theirs = vectorized.fit(work), inline.fit(work)
        assert vectorized.batched is batched
    for got, want in zip(mine.updates, theirs.updates, strict=True):
        assert got.metrics == pytest.approx(want.metrics, rel=1e-5)
        for name, value in want.delta.items():
            np.testing.assert_allclose(got.delta[name], value, rtol=1e-4, atol=1e-6)
