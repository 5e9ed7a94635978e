"""Clipping bounds every update's norm; adaptive clipping moves as Andrew et al. say."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sheaf.core.errors import ConfigError
from sheaf.core.params import Params
from sheaf.privacy import clip_delta, clip_sent, update_clip, update_noise_multiplier
from tests.helpers import params, params_like, params_structures

clips = st.floats(min_value=1e-3, max_value=1e3)


@given(params(), clips)
def test_a_clipped_delta_is_within_the_norm_and_keeps_its_direction(delta: Params, clip: float) -> None:
    clipped, norm = clip_delta(delta, clip)
    assert clipped.l2_norm() <= clip
    assert norm == pytest.approx(delta.astype(np.float64).l2_norm())
    if norm <= clip:
        assert clipped.array_equal(delta.astype(np.float64))
    else:
        scale = clip / norm
        for name in delta:
            np.testing.assert_allclose(clipped[name], delta[name].astype(np.float64) * scale, rtol=1e-12, atol=1e-300)


@given(st.data(), clips)
def test_what_a_clipping_client_sends_is_within_the_norm_as_the_server_computes_it(
    data: st.DataObject, clip: float
) -> None:
    structure = data.draw(params_structures())
    start = data.draw(params_like(structure))
    trained = data.draw(params_like(structure))
    sent, _ = clip_sent(start, trained, clip)
    assert sent.same_structure(start)
    assert (sent - start).astype(np.float64).l2_norm() <= clip  # the server's own arithmetic


def test_float32_rounding_cannot_push_a_sent_delta_past_the_norm() -> None:
    rng = np.random.default_rng(0)
    start = Params({"w": (rng.normal(size=10_000) * 100).astype(np.float32)})
    trained = Params({"w": start["w"] + rng.normal(size=10_000).astype(np.float32)})
    sent, norm = clip_sent(start, trained, 1.0)
    assert norm > 1.0 and (sent - start).astype(np.float64).l2_norm() <= 1.0


def test_adaptive_clipping_grows_when_too_many_are_clipped_and_shrinks_otherwise() -> None:
    assert update_clip(1.0, below=0.0, target_quantile=0.5, lr=0.2) == pytest.approx(math.exp(0.1))
    assert update_clip(1.0, below=1.0, target_quantile=0.5, lr=0.2) == pytest.approx(math.exp(-0.1))
    assert update_clip(2.0, below=0.5, target_quantile=0.5, lr=0.2) == 2.0


def test_the_update_and_the_count_share_one_noise_multiplier() -> None:
    z, sigma_b = 1.0, 5.0
    z_delta = update_noise_multiplier(z, sigma_b)
    assert z_delta**-2 + (2 * sigma_b) ** -2 == pytest.approx(z**-2)
    with pytest.raises(ConfigError, match="count_stddev must be > noise_multiplier / 2"):
        update_noise_multiplier(1.0, 0.5)
