"""Central evaluation gives the same bits wherever its shards run: here, in any worker, on any backend."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from sheaf.backends.base import Backend, SimulationEnv
from sheaf.backends.inline import InlineBackend
from sheaf.backends.pool import PoolBackend
from sheaf.backends.ray_backend import RayBackend
from sheaf.backends.vectorized import VectorizedBackend
from sheaf.core.params import Params
from sheaf.data.dataset import Federation
from sheaf.evaluation.central import central_shards, combine_shards, evaluate_shards
from sheaf.run.simulate import simulate
from sheaf.task.base import EvalResult, Task
from sheaf.task.torch_task import TorchTask
from tests.backends.tasks import SMALL, Where, WorkerOnly, digits, image_cnn, image_digits, mlp_task
from tests.ui.tasks import CountingTask

BACKENDS: dict[str, Callable[[], Backend]] = {
    "inline": InlineBackend,
    "vectorized": VectorizedBackend,
    "pool": lambda: PoolBackend(workers=2),
    "ray": lambda: RayBackend(workers=2, keep_actors=True),  # actors kept across tests: conftest.py
}


@pytest.fixture(params=sorted(BACKENDS))
def backend(request: pytest.FixtureRequest) -> str:
    if request.param == "ray":
        request.getfixturevalue("ray_session")
    return str(request.param)


def trained_like(task: Task) -> Params:
    """Params away from the initial ones (so outputs are not near-uniform)."""
    rng = np.random.default_rng(7)
    return Params({k: v + rng.normal(0, 0.3, v.shape).astype(v.dtype) for k, v in task.init_params(0).items()})


def shard_results(name: str, task: Task, federation: Federation, params: Params, shard_rows: int) -> list[EvalResult]:
    runner = BACKENDS[name]()
    runner.start(SimulationEnv(task, federation, seed=0))
    try:
        return runner.evaluate_central(params, central_shards(len(federation.central_test), shard_rows))  # type: ignore[attr-defined, no-any-return]
    finally:
        runner.close()


@pytest.mark.parametrize(
    ("model", "federation"),
    [(image_cnn, image_digits), (None, digits)],
    ids=["cnn-channels-last", "mlp"],
)
def test_every_backend_gives_the_bits_of_evaluating_each_shard_here(
    backend: str, model: Callable[[], object] | None, federation: Callable[[], Federation]
) -> None:
    fed = federation()
    task = TorchTask(model) if model is not None else mlp_task()  # type: ignore[arg-type]
    params = trained_like(task)
    shards = central_shards(len(fed.central_test), 37)  # uneven: the last shard is shorter
    here = evaluate_shards(task, params, fed.central_test, shards)

    got = shard_results(backend, task, fed, params, 37)

    assert got == here
    assert combine_shards(got) == combine_shards(here)


def test_the_pool_evaluates_shards_in_its_workers() -> None:
    fed = image_digits()
    task = Where(TorchTask(image_cnn))
    got = shard_results("pool", task, fed, trained_like(task), 37)  # type: ignore[arg-type]
    assert os.getpid() not in {r.metrics["pid"] for r in got}
    assert len(got) == len(central_shards(len(fed.central_test), 37))


def test_a_shard_that_fails_in_a_worker_is_evaluated_here_with_the_same_bits() -> None:
    fed = image_digits()
    task = WorkerOnly(TorchTask(image_cnn))
    params = trained_like(task)  # type: ignore[arg-type]
    shards = central_shards(len(fed.central_test), 50)
    assert shard_results("pool", task, fed, params, 50) == evaluate_shards(task, params, fed.central_test, shards)  # type: ignore[arg-type]


def test_a_whole_run_records_the_same_central_figures_on_inline_pool_and_vectorized(tmp_path: Path) -> None:
    # A convolutional model: vectorized trains it to float32 rounding of inline, so only its
    # evaluation of the same params is compared (above); inline and pool train identically.
    histories = {}
    for name in ("inline", "pool"):
        result = simulate(
            overrides=[*SMALL, f"runs_dir={tmp_path}", "evaluation.shard_rows=40"],
            task=TorchTask(image_cnn),
            federation=image_digits(),
            backend=BACKENDS[name](),
        )
        histories[name] = [(r.round, r.central) for r in result.history]
    assert histories["inline"] == histories["pool"]
    assert all(central["accuracy"] >= 0 for _, central in histories["inline"])


def test_a_metric_the_task_logs_evaluating_a_shard_is_in_that_shards_result_on_every_backend(backend: str) -> None:
    # CountingTask logs f1 = accuracy / 2, and its accuracy depends on the shard's length (odd
    # or even): with uneven shards, a logged figure lost or taken from another shard shows.
    fed = digits()
    task = CountingTask()
    params = Params({"w": np.array([0.3, 0.0], np.float32)})
    shards = central_shards(len(fed.central_test), 37)

    got = shard_results(backend, task, fed, params, 37)  # type: ignore[arg-type]

    assert [r.metrics["f1"] for r in got] == [r.metrics["accuracy"] / 2 for r in got]
    assert {len(s) % 2 for s in shards} == {0, 1} and len({r.metrics["f1"] for r in got}) == 2
    assert got == evaluate_shards(task, params, fed.central_test, shards)  # type: ignore[arg-type]
