"""Failures inside a backend: a client's exception, a worker killed mid-round, a hang."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from sheaf.backends.base import Backend
from sheaf.backends.inline import InlineBackend
from sheaf.backends.pool import PoolBackend
from sheaf.backends.ray_backend import RayBackend
from sheaf.core.errors import BackendError
from sheaf.run.simulate import SimulationResult, simulate
from sheaf.run.store import RunStore
from sheaf.task.torch_task import TorchTask
from tests.backends.tasks import SMALL, Crashing, digits, small_mlp

CRASH_CLIENT, CRASH_ROUND = 4, 2


def make(name: str, **kw: object) -> Backend:
    if name == "pool":
        return PoolBackend(workers=2)
    return RayBackend(workers=2, keep_actors=True)  # as in test_equivalence.py


@pytest.fixture(params=["pool", "ray"])
def parallel(request: pytest.FixtureRequest) -> str:
    if request.param == "ray":
        request.getfixturevalue("ray_session")
    return str(request.param)


def run(tmp_path: Path, backend: Backend, task: object, *extra: str) -> SimulationResult:
    return simulate(
        overrides=[*SMALL, f"runs_dir={tmp_path}", *extra],
        task=task,  # type: ignore[arg-type]
        federation=digits(),
        backend=backend,
    )


def reasons(result: SimulationResult) -> dict[tuple[int, int], str]:
    with RunStore.open(result.run_path, readonly=True) as store:
        return {(r, c): why for r, c, _, why in store.failures()}


def test_an_exception_in_user_code_is_that_clients_dropout(tmp_path: Path, parallel: str) -> None:
    raised = run(tmp_path, make(parallel), Crashing(CRASH_CLIENT, CRASH_ROUND, "raise"))
    reference = run(tmp_path, InlineBackend(), Crashing(CRASH_CLIENT, CRASH_ROUND, "raise"))
    assert raised.params.array_equal(reference.params)
    assert reasons(raised) == {(CRASH_ROUND, CRASH_CLIENT): "fit failed: RuntimeError: out of memory"}


def test_a_worker_killed_mid_round_costs_only_its_client_and_is_replaced(tmp_path: Path, parallel: str) -> None:
    # The client kills its own worker (SIGKILL) while training in round 2. The clients its
    # worker had already added to its partial sum train again elsewhere, so the model is
    # exactly the inline model of a run where that one client dropped out.
    killed = run(tmp_path, make(parallel), Crashing(CRASH_CLIENT, CRASH_ROUND, "kill"))
    reference = run(tmp_path, InlineBackend(), Crashing(CRASH_CLIENT, CRASH_ROUND, "raise"))
    assert killed.params.array_equal(reference.params)
    assert list(killed.history) == list(reference.history)
    assert [r.failed for r in killed.history] == [0, 1, 0]  # round 3 ran on a new worker
    ((where, why),) = reasons(killed).items()
    assert where == (CRASH_ROUND, CRASH_CLIENT)
    expected = (
        "the worker process running it was killed by signal 9 (SIGKILL)"
        if parallel == "pool"
        else "the Ray actor running it died"
    )
    assert why.startswith(f"fit failed: {expected}"), why


class HangClock:
    """The scheduler's clock in the hang test: real time, plus 1,000 s each time a client
    starts to hang (adds a file to ``marks``). The jump stops the hanging client at once; real
    time stops it too when the scheduler stamped its start after the jump (a reply of the
    client before it, read late); the other clients would need 10 real seconds each to be
    stopped, which no load on a test machine gives them."""

    def __init__(self, marks: Path) -> None:
        self.marks = marks

    def __call__(self) -> float:
        return time.monotonic() + 1000.0 * len(os.listdir(self.marks))


def test_a_client_that_hangs_is_stopped_by_the_timeout(tmp_path: Path, parallel: str) -> None:
    # One worker: the hanging client is the only one running when the clock jumps. Ray
    # learns nothing of a chunk until it is done: the whole chunk outlives its limit, then
    # each of its clients runs alone, and only the one that hangs again is stopped.
    marks = tmp_path / "marks"
    marks.mkdir()
    backend: Backend = (
        PoolBackend(workers=1, clock=HangClock(marks))
        if parallel == "pool"
        else RayBackend(workers=1, clock=HangClock(marks), keep_actors=True)
    )
    task = Crashing(CRASH_CLIENT, 1, "hang", marks=str(marks))
    result = run(tmp_path, backend, task, "rounds=2", "engine.client_timeout=10")
    assert [r.failed for r in result.history] == [1, 0]
    why = reasons(result)[(1, CRASH_CLIENT)]
    assert "ran for more than 10 s (engine.client_timeout)" in why
    hangs = len(os.listdir(marks))  # Ray: in its chunk, then again alone (unless its chunk was itself)
    assert hangs == 1 if parallel == "pool" else hangs in (1, 2)


def test_a_task_that_cannot_be_sent_to_workers_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(BackendError, match="cannot be pickled.*module-level functions.*backend=inline"):
        run(tmp_path, PoolBackend(workers=1), TorchTask(lambda: small_mlp()))


class BrokenSetup(Crashing):
    """A task whose worker set-up fails (e.g. a library missing on the worker)."""

    def setup_worker(self, threads: int) -> None:
        if os.environ.get("SHEAF_TEST_PARENT") != str(os.getpid()):
            raise ImportError("no module named 'cuda_magic'")


def test_a_worker_that_cannot_load_the_task_is_one_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHEAF_TEST_PARENT", str(os.getpid()))
    with pytest.raises(
        BackendError, match=r"^a pool worker could not load the task: ImportError: no module named 'cuda_magic'$"
    ):
        run(tmp_path, PoolBackend(workers=1), BrokenSetup(0, 0, "raise"))


def test_closing_stops_the_workers_and_frees_shared_memory(tmp_path: Path) -> None:
    from sheaf.backends.base import SimulationEnv
    from tests.backends.tasks import mlp_task

    task = mlp_task()
    backend = PoolBackend(workers=2)
    backend.start(SimulationEnv(task, digits(), seed=0))
    backend.evaluate([0, 1], task.init_params(0))  # publishes the params' block
    processes = [w.process for w in backend._workers]
    block = backend._params.handle["name"] if backend._params else ""
    copies = len(backend._data.copies) if backend._data else 0
    backend.close()
    backend.close()
    assert not any(p.is_alive() for p in processes)
    assert copies and backend._data is None  # the data it copied into shared files goes with it
    if os.path.isdir("/dev/shm"):
        assert block and not os.path.exists(f"/dev/shm/{block.lstrip('/')}")
