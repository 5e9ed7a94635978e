"""The one learning-rate decay: lr at round 1, never rising, within (0, lr], lr exactly at decay 1."""

from __future__ import annotations

import math
import sys

from hypothesis import assume, given
from hypothesis import strategies as st

from sheaf.core.config import TrainConfig
from sheaf.core.schedule import decayed_lr

rates = st.floats(1e-6, 100.0)
decays = st.floats(0.0, 1.0, exclude_min=True)
rounds = st.integers(-5, 100_000)


@given(rates, decays, st.integers(-5, 1))
def test_the_first_round_and_any_before_it_use_the_rate_itself(lr: float, decay: float, round: int) -> None:
    assert decayed_lr(lr, decay, round) == lr


@given(rates, rounds)
def test_a_decay_of_one_gives_the_rate_exactly_in_every_round(lr: float, round: int) -> None:
    # the digests in tests/run/test_behaviour_unchanged.py rest on this: no special case needed
    assert decayed_lr(lr, 1.0, round) == lr


@given(rates, decays, rounds, st.integers(0, 1000))
def test_the_rate_never_rises_and_stays_in_range(lr: float, decay: float, round: int, later: int) -> None:
    now, after = decayed_lr(lr, decay, round), decayed_lr(lr, decay, round + later)

    assert math.isfinite(now) and 0.0 < after <= now <= lr


@given(rates, decays, st.integers(1, 60))
def test_each_round_is_the_last_times_the_decay(lr: float, decay: float, round: int) -> None:
    assume(decayed_lr(lr, decay, round + 1) >= sys.float_info.min)  # subnormals round coarsely
    assert math.isclose(decayed_lr(lr, decay, round + 1), decayed_lr(lr, decay, round) * decay, rel_tol=1e-12)


@given(rates, decays, rounds)
def test_clients_train_with_the_same_rate_the_formula_gives(lr: float, decay: float, round: int) -> None:
    assert TrainConfig(lr=lr, lr_decay=decay).for_round(round).lr == decayed_lr(lr, decay, round)


def test_a_rate_decayed_past_the_smallest_float_still_trains() -> None:
    # 0.25 ** 538 is 0 in float64: the round's settings were a ConfigError ("train.lr must be > 0")
    assert TrainConfig(lr=1.0, lr_decay=0.25).for_round(539).lr == math.ulp(0.0)
