"""Backends by name (the ``backend`` setting).

Example:
    >>> build_backend("inline").name
    'inline'
"""

from __future__ import annotations

from collections.abc import Callable

from sheaf.backends.auto import AutoBackend
from sheaf.backends.base import Backend
from sheaf.backends.inline import InlineBackend
from sheaf.backends.pool import PoolBackend
from sheaf.backends.ray_backend import RayBackend
from sheaf.backends.vectorized import VectorizedBackend
from sheaf.core.errors import ConfigError

__all__ = ["BACKENDS", "available_backends", "build_backend"]

#: Backend name -> zero-argument factory.
BACKENDS: dict[str, Callable[[], Backend]] = {
    "auto": AutoBackend,
    "inline": InlineBackend,
    "pool": PoolBackend,
    "ray": RayBackend,
    "vectorized": VectorizedBackend,
}


def available_backends() -> list[str]:
    """Names of every registered backend."""
    return sorted(BACKENDS)


def build_backend(name: str) -> Backend:
    """A new, unstarted backend by name.

    Raises:
        ConfigError: if no backend has that name (the message lists those that exist).
    """
    factory = BACKENDS.get(name)
    if factory is None:
        raise ConfigError(f"unknown backend {name!r}; choose one of: {', '.join(available_backends())}")
    return factory()
