"""The pool under adversarial schedules, with real processes: random chunk sizes and
assignment, a slow worker, a paused worker, CPU hogs beside the run. The model is the
inline model bit for bit whatever the schedule (issue 14).

No test here assumes an idle machine: nothing is timed, the client time limit (where one
is set) is tens of times what a client needs, and the hogs make the machine busier still.
The scheduler's rules under every schedule, with a fake clock and failures, are in
``tests/backends/test_scheduler.py``; these show the real pool keeps them.
"""

from __future__ import annotations

import random
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sheaf.backends import _scheduler
from sheaf.backends._process import PoolTransport
from sheaf.backends.base import Backend
from sheaf.backends.inline import InlineBackend
from sheaf.backends.pool import PoolBackend
from sheaf.run.simulate import SimulationResult, simulate
from sheaf.run.store import RunStore
from tests.backends.tasks import SMALL, Paused, Uneven, digits, mlp_task

STRATEGIES = ("fedavg", "median")  # workers sum the updates / the parent keeps each one


def run(folder: str | Path, backend: Backend, task: object, *extra: str) -> SimulationResult:
    return simulate(
        overrides=[*SMALL, f"runs_dir={folder}", *extra],
        task=task,  # type: ignore[arg-type]
        federation=digits(),
        backend=backend,
    )


@cache
def inline_params(strategy: str) -> dict[str, np.ndarray]:
    """The inline model of each strategy, computed once (runs earlier in the process never
    change a run: ``tests/backends/test_equivalence.py``)."""
    with tempfile.TemporaryDirectory() as folder:
        result = run(folder, InlineBackend(), mlp_task(), f"strategy={strategy}")
    return dict(result.params.items())


def same_as_inline(result: SimulationResult, strategy: str = "fedavg") -> bool:
    expected = inline_params(strategy)
    return expected.keys() == dict(result.params.items()).keys() and all(
        np.array_equal(result.params[k], v) for k, v in expected.items()
    )


def failures(result: SimulationResult) -> list[tuple[int, int, str, str]]:
    with RunStore.open(result.run_path, readonly=True) as store:
        return list(store.failures())


@given(seed=st.integers(0, 2**32 - 1), strategy=st.sampled_from(STRATEGIES), workers=st.integers(2, 3))
@settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_random_chunk_sizes_and_assignment_give_the_inline_model(
    monkeypatch: pytest.MonkeyPatch, seed: int, strategy: str, workers: int
) -> None:
    # Chunks of any size from 1 to 64, handed to the live workers in a shuffled order, while
    # each client sleeps a few random milliseconds and one worker is slower than the rest.
    rng = random.Random(seed)
    real_live = PoolTransport.live
    with monkeypatch.context() as patch, tempfile.TemporaryDirectory() as folder:
        patch.setattr(_scheduler, "chunk_size", lambda waiting, live: rng.randint(1, _scheduler.MAX_CHUNK))
        patch.setattr(PoolTransport, "live", lambda self: rng.sample(real_live(self), len(real_live(self))))
        result = run(folder, PoolBackend(workers=workers), Uneven(folder, seed), f"strategy={strategy}")
        assert failures(result) == []
    assert same_as_inline(result, strategy)


def test_the_scheduler_uses_whatever_chunk_size_it_is_given(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # The seam above must be the one the pool uses, or the random sizes test nothing.
    asked: list[tuple[int, int]] = []

    def one_at_a_time(waiting: int, live: int) -> int:
        asked.append((waiting, live))
        return 1

    monkeypatch.setattr(_scheduler, "chunk_size", one_at_a_time)
    result = run(tmp_path, PoolBackend(workers=2), mlp_task())
    assert same_as_inline(result)
    assert len(asked) >= 3 * 10  # every client of every round went out alone


def test_a_worker_paused_mid_client_delays_the_round_but_not_the_model(tmp_path: Path) -> None:
    # Client 4's worker is stopped for 2 s in round 2 (no client time limit): the other
    # worker goes on with the rest; the stopped one then finishes its client.
    result = run(tmp_path, PoolBackend(workers=2), Paused(4, 2, seconds=2.0))
    assert failures(result) == []
    assert same_as_inline(result)


def test_a_pause_well_within_the_client_time_limit_costs_no_client(tmp_path: Path) -> None:
    result = run(tmp_path, PoolBackend(workers=2), Paused(4, 2, seconds=1.0), "engine.client_timeout=60")
    assert failures(result) == []
    assert same_as_inline(result)


@pytest.fixture
def hogs() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Three processes spinning on the CPU for as long as the test runs (then stopped)."""
    spinning = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(3)]
    try:
        yield spinning
    finally:
        for process in spinning:
            process.kill()
            process.wait()


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_cpu_hogs_beside_the_run_do_not_change_the_model(
    hogs: list[subprocess.Popen[bytes]], tmp_path: Path, strategy: str
) -> None:
    result = run(tmp_path, PoolBackend(workers=2), mlp_task(), f"strategy={strategy}", "engine.client_timeout=120")
    assert all(h.poll() is None for h in hogs)  # they were spinning all along
    assert failures(result) == []
    assert same_as_inline(result, strategy)
