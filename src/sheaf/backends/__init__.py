"""Backends: where client work runs. The interface, and the in-process reference backend."""

from sheaf.backends.base import Backend, Cohort, EvalOutcome, FitOutcome, SimulationEnv
from sheaf.backends.inline import InlineBackend
from sheaf.backends.registry import BACKENDS, available_backends, build_backend

__all__ = [
    "BACKENDS",
    "Backend",
    "Cohort",
    "EvalOutcome",
    "FitOutcome",
    "InlineBackend",
    "SimulationEnv",
    "available_backends",
    "build_backend",
]
