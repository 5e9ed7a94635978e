"""Test settings shared by the whole suite."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from sheaf.backends.ray_backend import local_ray_system_config, ray_available, release_actors

settings.register_profile("default", deadline=None, max_examples=60, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("ci", deadline=None, max_examples=100, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("ci" if os.environ.get("CI") else "default")


@pytest.fixture
def runs_dir(tmp_path: Path) -> str:
    """A fresh folder for run stores, as an override."""
    return f"runs_dir={tmp_path / 'runs'}"


#: A small fast run: 8 IID digits clients, all of them each round, 3 rounds.
SMALL = ["rounds=3", "clients=8", "partition=iid", "fraction=1", "evaluation.interval=2"]


@pytest.fixture(scope="session")
def ray_session() -> Iterator[None]:
    """A local Ray instance the Ray backends join (and leave running): started once, since
    its start-up costs seconds; with the settings the backend starts Ray with (its actors at
    this process's niceness, not Ray's 15, which starves them beside busy processes)."""
    if not ray_available():
        pytest.skip("Ray is not installed here (pip install 'sheaf[ray]')")
    import ray

    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", _system_config=local_ray_system_config())
    yield
    release_actors()  # those the tests' runs kept (keep_actors=True)
    ray.shutdown()
