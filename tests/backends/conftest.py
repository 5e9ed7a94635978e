"""Ray, started once for the whole session (its start-up costs seconds), where installed."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from sheaf.backends.ray_backend import ray_available


@pytest.fixture(scope="session")
def ray_session() -> Iterator[None]:
    """A local Ray instance the Ray backends join (and leave running)."""
    if not ray_available():
        pytest.skip("Ray is not installed here (pip install 'sheaf[ray]')")
    import ray

    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")
    yield
    ray.shutdown()
