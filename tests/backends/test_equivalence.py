"""Same config and seed, same model: inline == pool == ray bit for bit; vectorized within a tolerance."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from sheaf.backends.base import Backend
from sheaf.backends.inline import InlineBackend
from sheaf.backends.pool import PoolBackend
from sheaf.backends.ray_backend import RayBackend
from sheaf.backends.vectorized import VectorizedBackend
from sheaf.run.simulate import SimulationResult, simulate
from sheaf.run.store import RunStore
from sheaf.strategies.base import Strategy
from sheaf.strategies.registry import STRATEGIES
from sheaf.task.torch_task import TorchTask
from tests.backends.tasks import SMALL, Leaky, Pids, Stateful, clipped_fedavg, digits, mlp_task, wide_mlp

#: Strategies the vectorized backend must match inline on (name -> hyperparameters).
#: Adding a strategy is one line here.
VECTORIZED = {
    "fedavg": {},
    "fedprox": {"mu": 0.1},
    "fedadam": {"lr": 0.03},
}

#: Vectorized results agree with inline to this tolerance (float32 reassociation in batched
#: matrix products); on these MLPs they are usually bit-identical.
RTOL, ATOL = 1e-4, 1e-6


def make(name: str) -> Backend:
    # Ray's actors are kept from one run to the next (each Python + torch start costs seconds
    # on a busy machine); test_kept_ray_actors_carry_nothing_of_a_run_into_the_next shows
    # that is safe, and the Ray runs of tests/run/test_behaviour_unchanged.py start new ones.
    return {"pool": lambda: PoolBackend(workers=2), "ray": lambda: RayBackend(workers=2, keep_actors=True)}[name]()


def run(
    tmp_path: Path, backend: Backend, *extra: str, task: object = None, strategy: Strategy | None = None
) -> SimulationResult:
    return simulate(
        overrides=[*SMALL, f"runs_dir={tmp_path}", *extra],
        task=task or mlp_task(),  # type: ignore[arg-type]
        federation=digits(),
        strategy=strategy,
        backend=backend,
    )


def same_run(a: SimulationResult, b: SimulationResult) -> None:
    assert a.params.array_equal(b.params)
    assert list(a.history) == list(b.history)
    with RunStore.open(a.run_path, readonly=True) as sa, RunStore.open(b.run_path, readonly=True) as sb:
        assert sa.client_records() == sb.client_records()
        assert sa.failures() == sb.failures()
        assert sa.client_states(range(10)).keys() == sb.client_states(range(10)).keys()
        for cid, groups in sa.client_states(range(10)).items():
            other = sb.client_states([cid])[cid]
            assert all(groups[g].array_equal(other[g]) for g in groups)


@pytest.fixture(params=["pool", "ray"])
def parallel(request: pytest.FixtureRequest) -> str:
    if request.param == "ray":
        request.getfixturevalue("ray_session")
    return str(request.param)


def test_pool_and_ray_give_the_inline_model_bit_for_bit(tmp_path: Path, parallel: str) -> None:
    # FedAvg only needs the weighted sum: workers add their clients up and send exact sums.
    same_run(run(tmp_path, InlineBackend()), run(tmp_path, make(parallel)))


def test_bit_identity_holds_for_whole_updates_client_state_and_extras(tmp_path: Path, parallel: str) -> None:
    # A strategy that must see each update, and a task with per-client state and extra tensors.
    for strategy in (clipped_fedavg(), None):
        reference = run(tmp_path, InlineBackend(), task=Stateful(), strategy=strategy)
        same_run(reference, run(tmp_path, make(parallel), task=Stateful(), strategy=strategy))
    assert reference.history[-1].fit["train_loss"] > 0


def test_runs_earlier_in_the_process_do_not_change_the_next_one(tmp_path: Path, parallel: str) -> None:
    # Issue 14: two other configurations first, then the reference, all in this process. Each
    # run fixes torch's thread count where its clients train; a task that did not pass that
    # on trained with whatever the run before had left in the parent, and with torch's
    # default in the workers (Stateful reports the count in its metrics, so it is compared).
    run(tmp_path, make(parallel))
    run(tmp_path, InlineBackend(), "threads=2", "strategy=fedprox")
    reference = run(tmp_path, InlineBackend(), task=Stateful())
    same_run(reference, run(tmp_path, make(parallel), task=Stateful()))
    with RunStore.open(reference.run_path, readonly=True) as store:
        assert {record.metrics["threads"] for _, record in store.client_records(phase="fit")} == {1.0}


def test_kept_ray_actors_carry_nothing_of_a_run_into_the_next(tmp_path: Path, ray_session: None) -> None:
    # A run whose task leaves torch with 2 threads in its actors, then a run that keeps those
    # actors (the same processes): it trains with 1 thread and gives the inline model.
    def fits(result: SimulationResult) -> list[tuple[int, dict[str, float]]]:
        with RunStore.open(result.run_path, readonly=True) as store:
            return [(cid, dict(record.metrics)) for cid, record in store.client_records(phase="fit")]

    first = run(tmp_path, RayBackend(workers=2, keep_actors=True), task=Leaky())
    second = run(tmp_path, RayBackend(workers=2, keep_actors=True), task=Pids())
    reference = run(tmp_path, InlineBackend(), task=Stateful())
    assert {m["threads"] for _, m in fits(first)} == {2.0}  # the leak happened
    assert {m["pid"] for _, m in fits(second)} == {m["pid"] for _, m in fits(first)}  # in the same two actors
    assert len({m["pid"] for _, m in fits(second)}) == 2
    assert second.params.array_equal(reference.params)
    assert [(cid, {k: v for k, v in m.items() if k != "pid"}) for cid, m in fits(second)] == fits(reference)


def test_a_kept_actor_that_died_meanwhile_is_replaced(
    tmp_path: Path, ray_session: None, caplog: pytest.LogCaptureFixture
) -> None:
    import ray

    from sheaf.backends import ray_backend

    run(tmp_path, RayBackend(workers=2, keep_actors=True))
    assert len(ray_backend._KEPT) == 2
    ray.kill(ray_backend._KEPT[0][1])
    with caplog.at_level(logging.WARNING, "sheaf.backends"):
        again = run(tmp_path, RayBackend(workers=2, keep_actors=True))
    assert again.params.array_equal(run(tmp_path, InlineBackend()).params)
    assert [r.getMessage() for r in caplog.records].count(
        "sheaf ray: a kept actor is gone; starting a new one instead"
    ) == 1


@pytest.mark.timeout(120, method="thread")  # a write blocked for good may never run SIGALRM's handler
def test_messages_larger_than_a_pipe_both_ways_at_once_give_the_inline_model(tmp_path: Path) -> None:
    # SCAFFOLD on a 154k-parameter model: a chunk's client states going out while a worker's
    # update and control variate come back, each more than the pipe holds. Sending them from
    # the loop that reads the replies used to deadlock.
    task = TorchTask(wide_mlp)
    reference = run(tmp_path, InlineBackend(), "strategy=scaffold", "rounds=2", task=task)
    same_run(reference, run(tmp_path, PoolBackend(workers=2), "strategy=scaffold", "rounds=2", task=task))


@pytest.mark.parametrize("name", sorted(VECTORIZED))
@pytest.mark.parametrize(
    "train", [["optimizer=sgd", "momentum=0.9"], ["optimizer=adam", "lr=0.01", "weight_decay=0.01"]]
)
def test_vectorized_matches_inline_within_the_stated_tolerance(tmp_path: Path, name: str, train: list[str]) -> None:
    strategy = STRATEGIES[name](**VECTORIZED[name])
    inline = run(tmp_path, InlineBackend(), *train, strategy=strategy)
    vectorized = run(tmp_path, VectorizedBackend(), *train, strategy=strategy)
    for key, value in inline.params.items():
        np.testing.assert_allclose(vectorized.params[key], value, rtol=RTOL, atol=ATOL)
    for a, b in zip(inline.history, vectorized.history, strict=True):
        assert (a.sampled, a.completed, a.failed) == (b.sampled, b.completed, b.failed)
        assert b.fit["train_loss"] == pytest.approx(a.fit["train_loss"], rel=RTOL)
        assert b.central["loss"] == pytest.approx(a.central["loss"], rel=RTOL)


def test_vectorized_is_deterministic(tmp_path: Path) -> None:
    first, second = run(tmp_path, VectorizedBackend()), run(tmp_path, VectorizedBackend())
    assert first.params.array_equal(second.params)
    assert list(first.history) == list(second.history)


def test_central_dp_clipped_on_the_server_trains_batched_and_matches_inline(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # The server clips and noises; clients hear nothing of it, so vectorized trains them batched.
    dp = ["privacy.mode=central", "privacy.noise_multiplier=0.5", "sampling=poisson", "fraction=0.6"]
    inline = run(tmp_path, InlineBackend(), *dp)
    with caplog.at_level(logging.WARNING, "sheaf.backends"):
        vectorized = run(tmp_path, VectorizedBackend(), *dp)
    assert not [r for r in caplog.records if "one by one" in r.getMessage()]
    for key, value in inline.params.items():
        np.testing.assert_allclose(vectorized.params[key], value, rtol=RTOL, atol=ATOL)
    assert [r.privacy for r in vectorized.history] == [r.privacy for r in inline.history]
    assert inline.history[-1].privacy["epsilon"] > 0


@pytest.mark.parametrize(
    "dp",
    [
        ["privacy.mode=central", "privacy.clipping=client", "privacy.client_budget=50"],
        ["privacy.mode=local", "strategy.min_clients=1"],
    ],
    ids=["client-clipping-with-budgets", "local"],
)
def test_private_runs_give_the_inline_model_bit_for_bit(tmp_path: Path, parallel: str, dp: list[str]) -> None:
    # Client steps (clipping, local noise from the seed, ledgers in client state) run in the workers.
    dp = [*dp, "privacy.noise_multiplier=0.5", "sampling=poisson", "fraction=0.6"]
    reference, other = run(tmp_path, InlineBackend(), *dp), run(tmp_path, make(parallel), *dp)
    assert reference.params.array_equal(other.params)
    for a, b in zip(reference.history, other.history, strict=True):  # (local DP's train_loss is NaN: no metrics)
        assert (a.sampled, a.completed, a.central, a.privacy) == (b.sampled, b.completed, b.central, b.privacy)
    if "privacy.mode=central" in dp:  # the ledgers in client state too
        same_run(reference, other)
    assert reference.history[-1].privacy["epsilon"] > 0
