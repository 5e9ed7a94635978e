"""Reshaping the code must not change what it computes: final params of fixed-seed runs.

The digests in ``fixtures/behaviour_digests.json`` were recorded on main at 59ed0ee (before
the seams refactor) by ``python -m tests.run.record_digests``, every run in a fresh
process. Each configuration runs here on every backend that gave a digest then.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sheaf.run.simulate import simulate
from tests.run.behaviour import BACKENDS, CONFIGS, digest, overrides

RECORDED: dict[str, dict[str, str]] = json.loads(
    (Path(__file__).parent / "fixtures" / "behaviour_digests.json").read_text()
)


def test_every_configuration_and_backend_has_a_recorded_digest() -> None:
    assert set(RECORDED) == set(CONFIGS)
    assert all(set(RECORDED[name]) == set(BACKENDS) for name in CONFIGS)


@pytest.mark.parametrize("backend", ["inline", "vectorized"])
@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_in_process_backends_give_the_recorded_params(tmp_path: Path, name: str, backend: str) -> None:
    result = simulate(overrides=overrides(name, backend, str(tmp_path)))
    assert digest(result.params) == RECORDED[name][backend]


@pytest.mark.e2e
@pytest.mark.parametrize("backend", ["pool", "ray"])
def test_worker_backends_give_the_recorded_params(tmp_path: Path, backend: str, request: pytest.FixtureRequest) -> None:
    if backend == "ray":
        request.getfixturevalue("ray_session")
    got = {
        name: digest(simulate(overrides=overrides(name, backend, str(tmp_path / name))).params)
        for name in sorted(CONFIGS)
    }
    assert got == {name: RECORDED[name][backend] for name in sorted(CONFIGS)}
