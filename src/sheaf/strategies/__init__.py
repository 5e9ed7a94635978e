"""Aggregation strategies as chains of small pure steps, and client sampling (from :mod:`sheaf.core.sampling`)."""

from sheaf.core.sampling import cohort_size, sample_cohort
from sheaf.strategies.aggregate import weighted_mean
from sheaf.strategies.base import (
    AggregateStep,
    ConfigureFn,
    RoundContext,
    ServerStep,
    Step,
    Strategy,
    UpdateStep,
    WeightedSum,
    chain,
    sum_updates,
)
from sheaf.strategies.fedavg import fedavg
from sheaf.strategies.fednova import fednova, normalized_mean
from sheaf.strategies.fedopt import fedadagrad, fedadam, fedavgm, fedyogi
from sheaf.strategies.fedper import fedper
from sheaf.strategies.fedprox import fedprox
from sheaf.strategies.krum import bulyan, bulyan_aggregate, krum, krum_aggregate, krum_scores, multikrum
from sheaf.strategies.qfedavg import qfedavg, qffl_aggregate
from sheaf.strategies.registry import (
    STRATEGIES,
    available_strategies,
    build_strategy,
    describe_strategy,
    register_strategy,
)
from sheaf.strategies.robust import coordinate_median, coordinate_trimmed_mean, median, stack_updates, trimmed_mean
from sheaf.strategies.scaffold import ScaffoldState, scaffold, scaffold_aggregate, server_scale
from sheaf.strategies.server_opt import AdaptiveState, MomentumState, server_adaptive, server_momentum

__all__ = [
    "STRATEGIES",
    "AdaptiveState",
    "AggregateStep",
    "ConfigureFn",
    "MomentumState",
    "RoundContext",
    "ScaffoldState",
    "ServerStep",
    "Step",
    "Strategy",
    "UpdateStep",
    "WeightedSum",
    "available_strategies",
    "build_strategy",
    "bulyan",
    "bulyan_aggregate",
    "chain",
    "cohort_size",
    "coordinate_median",
    "coordinate_trimmed_mean",
    "describe_strategy",
    "fedadagrad",
    "fedadam",
    "fedavg",
    "fedavgm",
    "fednova",
    "fedper",
    "fedprox",
    "fedyogi",
    "krum",
    "krum_aggregate",
    "krum_scores",
    "median",
    "multikrum",
    "normalized_mean",
    "qfedavg",
    "qffl_aggregate",
    "register_strategy",
    "sample_cohort",
    "scaffold",
    "scaffold_aggregate",
    "server_adaptive",
    "server_momentum",
    "server_scale",
    "stack_updates",
    "sum_updates",
    "trimmed_mean",
    "weighted_mean",
]
