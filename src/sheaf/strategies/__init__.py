"""Aggregation strategies as chains of small pure steps, and client sampling."""

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
from sheaf.strategies.fedprox import fedprox
from sheaf.strategies.registry import STRATEGIES, available_strategies, build_strategy, register_strategy
from sheaf.strategies.sampling import cohort_size, sample_cohort

__all__ = [
    "STRATEGIES",
    "AggregateStep",
    "ConfigureFn",
    "RoundContext",
    "ServerStep",
    "Step",
    "Strategy",
    "UpdateStep",
    "WeightedSum",
    "available_strategies",
    "build_strategy",
    "chain",
    "cohort_size",
    "fedavg",
    "fedprox",
    "register_strategy",
    "sample_cohort",
    "sum_updates",
    "weighted_mean",
]
