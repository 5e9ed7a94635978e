"""Noise sources: seeded noise is reproducible, secure noise is Gaussian and is not."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from sheaf.core.errors import ConfigError
from sheaf.privacy import KeyedNoise, SecureNoise, secure_uniform, server_noise


@pytest.mark.parametrize("kind", ["seeded", "secure"])
def test_each_source_draws_gaussians_of_the_asked_deviation(kind: str) -> None:
    values = server_noise(kind, seed=3, round=2).normal((200_000,), 0.7)
    # The sample std of 200k normals is within 1% of the truth with overwhelming probability.
    assert values.std() == pytest.approx(0.7, rel=0.01)
    assert abs(values.mean()) < 0.01
    assert stats.kstest(values / 0.7, "norm").pvalue > 1e-4


def test_seeded_noise_is_the_same_for_the_same_seed_and_round_only() -> None:
    a = server_noise("seeded", seed=3, round=2).normal((5,), 1.0)
    assert np.array_equal(a, server_noise("seeded", seed=3, round=2).normal((5,), 1.0))
    assert not np.array_equal(a, server_noise("seeded", seed=3, round=3).normal((5,), 1.0))


def test_secure_noise_never_repeats_and_has_the_asked_shape() -> None:
    a, b = SecureNoise().normal((3, 4), 1.0), SecureNoise().normal((3, 4), 1.0)
    assert a.shape == (3, 4) and a.dtype == np.float64 and not np.array_equal(a, b)
    assert SecureNoise().normal((7,), 1.0).shape == (7,)  # an odd count uses half a Box-Muller pair


def test_secure_uniforms_are_in_the_unit_interval_and_uniform() -> None:
    u = secure_uniform(100_000)
    assert ((u > 0) & (u <= 1)).all()
    assert stats.kstest(u, "uniform").pvalue > 1e-4


def test_an_unknown_source_is_one_clear_error() -> None:
    with pytest.raises(ConfigError, match="privacy.noise must be one of: seeded, secure"):
        server_noise("random", 0, 1)


def test_keyed_noise_is_gaussian_and_the_same_for_the_same_secret_and_round_only() -> None:
    secret = bytes(range(32))
    values = server_noise("secure", seed=3, round=2, key=secret).normal((200_000,), 0.7)
    assert values.std() == pytest.approx(0.7, rel=0.01) and abs(values.mean()) < 0.01
    assert stats.kstest(values / 0.7, "norm").pvalue > 1e-4
    assert np.array_equal(KeyedNoise(secret, round=2).normal((200_000,), 0.7), values)
    one, two = KeyedNoise(secret, round=2), KeyedNoise(secret, round=2)
    first = [one.normal((10,), 1.0), one.normal((3, 2), 1.0)]  # successive draws continue the stream
    assert all(np.array_equal(a, two.normal(a.shape, 1.0)) for a in first)
    assert not np.array_equal(first[0][:6], first[1].ravel())
    other_round, other_secret = KeyedNoise(secret, round=3), KeyedNoise(bytes(32), round=2)
    assert not np.array_equal(other_round.normal((5,), 1.0), values[:5] / 0.7)
    assert not np.array_equal(other_secret.normal((5,), 1.0), values[:5] / 0.7)
    assert not np.array_equal(values[:5], server_noise("seeded", seed=3, round=2).normal((5,), 0.7))
