"""Backends: where client work runs — inline, pool, vectorized, Ray, or chosen automatically."""

from sheaf.backends.auto import MIN_COHORT, POOL_MIN_FLOPS, AutoBackend, describe_backend
from sheaf.backends.base import (
    Backend,
    BackendBase,
    CentralEvaluator,
    ClientReport,
    Cohort,
    EvalOutcome,
    FitOutcome,
    RoundWork,
    SimulationEnv,
)
from sheaf.backends.client_runner import ClientRunner, FitReply
from sheaf.backends.inline import InlineBackend
from sheaf.backends.pool import WORKERS_PER_GPU, PoolBackend, default_workers, warm_up
from sheaf.backends.ray_backend import RayBackend, local_ray_system_config, ray_available, release_actors
from sheaf.backends.registry import BACKENDS, available_backends, build_backend
from sheaf.backends.vectorized import SMALL_FLOPS, VectorizedBackend, forward_flops, vectorize_reason

__all__ = [
    "BACKENDS",
    "MIN_COHORT",
    "POOL_MIN_FLOPS",
    "SMALL_FLOPS",
    "WORKERS_PER_GPU",
    "AutoBackend",
    "Backend",
    "BackendBase",
    "CentralEvaluator",
    "ClientReport",
    "ClientRunner",
    "Cohort",
    "EvalOutcome",
    "FitOutcome",
    "FitReply",
    "InlineBackend",
    "PoolBackend",
    "RayBackend",
    "RoundWork",
    "SimulationEnv",
    "VectorizedBackend",
    "available_backends",
    "build_backend",
    "default_workers",
    "describe_backend",
    "forward_flops",
    "local_ray_system_config",
    "ray_available",
    "release_actors",
    "vectorize_reason",
    "warm_up",
]
