"""A million registered clients: per-round work follows the cohort, not the population."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sheaf.data.synthetic import synthetic_federation
from sheaf.run.simulate import simulate
from sheaf.run.store import RunStore
from sheaf.task.models import logistic_regression
from sheaf.task.torch_task import TorchTask


def logreg() -> object:
    return logistic_regression(4, 2)


def test_a_million_registered_clients_train_a_fixed_cohort_and_evaluate_a_bounded_sample(tmp_path: Path) -> None:
    federation = synthetic_federation(1_000_000, samples=4, features=4, central_test=1000, seed=1)
    result = simulate(
        overrides=[
            "rounds=2",
            "lr=0.5",
            "fraction=0.0001",  # 100 clients per round
            "evaluation.interval=1",
            "evaluation.max_clients=300",
            f"runs_dir={tmp_path}",
            "backend=vectorized",
        ],
        task=TorchTask(logreg),  # type: ignore[arg-type]
        federation=federation,
    )
    assert [r.sampled for r in result.history] == [100, 100]
    with RunStore.open(result.run_path, readonly=True) as store:
        evaluated = [{c for _, c in _records(store, r)} for r in (1, 2)]
        assert store.clients_with_state == 0
    assert len(evaluated[0]) == 300
    assert evaluated[0] == evaluated[1]  # the same fixed sample every time
    assert result.history.final_central["accuracy"] > 0.6


def _records(store: RunStore, round: int) -> list[tuple[int, int]]:
    return [(r, rec.client_id) for r, rec in store.client_records(round=round, phase="evaluate")]


@pytest.mark.parametrize(("limit", "expected"), [(0, 40), (15, 15), (100, 40)])
def test_the_evaluation_sample_is_all_clients_up_to_the_limit(tmp_path: Path, limit: int, expected: int) -> None:
    federation = synthetic_federation(40, samples=5, features=4, seed=0)
    result = simulate(
        overrides=["rounds=1", "fraction=0.1", f"evaluation.max_clients={limit}", f"runs_dir={tmp_path}"],
        task=TorchTask(logreg),  # type: ignore[arg-type]
        federation=federation,
    )
    with RunStore.open(result.run_path, readonly=True) as store:
        ids = [c for _, c in _records(store, 1)]
    assert len(ids) == expected and ids == sorted(ids)
    assert np.all(np.diff(ids) > 0)
