from __future__ import annotations

import numpy as np
import pytest

from sheaf.core.config import DataConfig
from sheaf.core.errors import ConfigError
from sheaf.core.sampling import sample_cohort
from sheaf.data.catalog import build_federation
from sheaf.run.population import Population


def test_a_federations_population_samples_exactly_the_simulations_cohorts() -> None:
    federation = build_federation(DataConfig(clients=12, partition="iid"), seed=0)
    population = Population.of(federation)
    assert population.client_ids == tuple(range(12)) and population.central_test is federation.central_test
    for round in range(1, 6):
        assert population.cohort(5, seed=3, round=round) == sample_cohort(12, 5, seed=3, round=round).tolist()


def test_cohorts_of_registered_ids_depend_on_seed_and_round_only() -> None:
    population = Population((2, 5, 11, 40))
    cohorts = [population.cohort(2, seed=0, round=r) for r in range(1, 20)]
    assert all(set(c) <= {2, 5, 11, 40} and c == sorted(c) for c in cohorts)
    assert cohorts == [Population((2, 5, 11, 40)).cohort(2, seed=0, round=r) for r in range(1, 20)]
    assert len({tuple(c) for c in cohorts}) > 1


@pytest.mark.parametrize(
    ("ids", "evaluators", "match"),
    [((), (), "at least one"), ((3, 1), (), "increasing"), ((1, 1), (), "distinct"), ((1, 2), (7,), "not registered")],
)
def test_a_population_is_checked(ids: tuple[int, ...], evaluators: tuple[int, ...], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        Population(ids, evaluators)


def test_clients_without_local_test_rows_are_not_asked_to_evaluate() -> None:
    federation = build_federation(DataConfig(clients=4, partition="iid", test_fraction=0.0), seed=0)
    assert Population.of(federation).evaluation_clients == ()
    assert np.all(federation.test_counts == 0)
