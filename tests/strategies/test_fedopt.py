"""Server optimisers against values worked out by hand from Reddi et al.'s Algorithm 2."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sheaf.core.errors import ConfigError
from sheaf.core.params import Params
from sheaf.core.update import Update
from sheaf.strategies.base import RoundContext, Strategy
from sheaf.strategies.fedopt import fedadagrad, fedadam, fedavgm, fedyogi


def two_rounds(strategy: Strategy, first: float, second: float) -> tuple[float, float]:
    """The model after a round whose mean delta is ``first``, then one whose mean delta is ``second``."""
    params = Params({"w": np.zeros(1)})
    state = strategy.init(params)
    out = []
    for round, value in enumerate((first, second), start=1):
        # two clients whose weighted mean is `value`
        updates = [
            Update(0, Params({"w": np.array([value - 1])}), 1),
            Update(1, Params({"w": np.array([value + 1])}), 1),
        ]
        params, state, _ = strategy.aggregate(updates, state, RoundContext(round, params, 0, 2))
        out.append(float(params["w"][0]))
    return out[0], out[1]


def test_fedavgm_accumulates_momentum() -> None:
    # m1 = 2, x1 = 0.5 * 2 = 1; m2 = 0.9 * 2 - 1 = 0.8, x2 = 1 + 0.5 * 0.8 = 1.4
    assert two_rounds(fedavgm(lr=0.5, momentum=0.9), 2.0, -1.0) == pytest.approx((1.0, 1.4))


def test_fedavgm_with_no_momentum_and_unit_rate_is_fedavg() -> None:
    assert two_rounds(fedavgm(lr=1.0, momentum=0.0), 2.0, -1.0) == pytest.approx((2.0, 1.0))


def test_fedadam_has_no_bias_correction_and_starts_v_at_tau_squared() -> None:
    # v0 = tau^2 = 1. Round 1: m = 0.5, v = 0.5 * 1 + 0.5 * 1 = 1, step = 0.4 * 0.5 / (1 + 1) = 0.1.
    # Round 2 (delta 3): m = 0.25 + 1.5 = 1.75, v = 0.5 + 4.5 = 5, step = 0.4 * 1.75 / (sqrt 5 + 1).
    first, second = two_rounds(fedadam(lr=0.4, beta1=0.5, beta2=0.5, tau=1.0), 1.0, 3.0)
    assert first == pytest.approx(0.1)
    assert second == pytest.approx(0.1 + 0.7 / (math.sqrt(5) + 1))


def test_fedyogi_moves_v_additively() -> None:
    # Round 1: v = 1 - 0.5 * 1 * sign(1 - 1) = 1, as Adam. Round 2: v = 1 - 0.5 * 9 * sign(1 - 9) = 5.5.
    first, second = two_rounds(fedyogi(lr=0.4, beta1=0.5, beta2=0.5, tau=1.0), 1.0, 3.0)
    assert first == pytest.approx(0.1)
    assert second == pytest.approx(0.1 + 0.7 / (math.sqrt(5.5) + 1))


def test_fedadagrad_sums_squares() -> None:
    # beta1 = 0: m = delta. v: 1 + 1 = 2, then 2 + 9 = 11.
    first, second = two_rounds(fedadagrad(lr=0.4, beta1=0.0, tau=1.0), 1.0, 3.0)
    assert first == pytest.approx(0.4 / (math.sqrt(2) + 1))
    assert second == pytest.approx(first + 1.2 / (math.sqrt(11) + 1))


def test_moments_are_kept_per_parameter_in_its_dtype() -> None:
    strategy = fedadam()
    start = Params({"a": np.zeros(2, np.float32), "b": np.zeros((), np.float64)})
    state = strategy.init(start)
    _, (_, adam), _ = strategy.aggregate(
        [Update(0, start.map(lambda x: x + 1), 3)], state, RoundContext(1, start, 0, 1)
    )
    assert adam.m["a"].dtype == np.float32
    assert adam.v["b"].dtype == np.float64
    assert adam.v["a"].tolist() == pytest.approx([0.99e-6 + 0.01] * 2)


@pytest.mark.parametrize(
    ("factory", "kwargs", "message"),
    [
        (fedadam, {"lr": 0.0}, "strategy.lr must be > 0 for fedadam, got 0.0"),
        (fedadam, {"beta1": 1.0}, "strategy.beta1 must be >= 0 and < 1 for fedadam, got 1.0"),
        (fedyogi, {"tau": -1e-3}, "strategy.tau must be > 0 for fedyogi, got -0.001"),
        (fedadagrad, {"lr": "fast"}, "strategy.lr must be a number for fedadagrad, got 'fast'"),
        (fedavgm, {"momentum": True}, "strategy.momentum must be a number for fedavgm, got True"),
    ],
)
def test_bad_settings_name_the_setting_and_the_range(factory: object, kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        factory(**kwargs)  # type: ignore[operator]
    assert str(info.value) == message


def step_at(strategy: Strategy, round: int, delta: float) -> float:
    """The change one aggregation makes in ``round`` (fresh state) for a mean delta ``delta``."""
    params = Params({"w": np.zeros(1)})
    updates = [Update(0, Params({"w": np.array([delta])}), 1)]
    new, _, _ = strategy.aggregate(updates, strategy.init(params), RoundContext(round, params, 0, 1))
    return float(new["w"][0])


def test_fedavgm_server_lr_decays_by_the_server_round() -> None:
    # no momentum: the step is lr * lr_decay^(t-1) * delta; the round is the server's context
    strategy = fedavgm(lr=0.5, momentum=0.0, lr_decay=0.5)
    assert [step_at(strategy, t, 2.0) for t in (1, 2, 3, 11)] == pytest.approx([1.0, 0.5, 0.25, 0.5**10])


def test_fedavgm_decay_scales_the_momentum_step() -> None:
    # x1 = 0.5 * 2 = 1; m2 = 0.9 * 2 - 1 = 0.8, x2 = 1 + (0.5 * 0.5) * 0.8 = 1.2 (undecayed: 1.4)
    assert two_rounds(fedavgm(lr=0.5, momentum=0.9, lr_decay=0.5), 2.0, -1.0) == pytest.approx((1.0, 1.2))


@pytest.mark.parametrize("factory", [fedadam, fedyogi])
def test_adaptive_server_lr_decays(factory: object) -> None:
    # as the undecayed tests above, with the second round's step halved
    first, second = two_rounds(factory(lr=0.4, beta1=0.5, beta2=0.5, tau=1.0, lr_decay=0.5), 1.0, 3.0)  # type: ignore[operator]
    assert first == pytest.approx(0.1)
    v = 5.0 if factory is fedadam else 5.5
    assert second == pytest.approx(0.1 + 0.5 * 0.7 / (math.sqrt(v) + 1))


def test_fedadagrad_server_lr_decays() -> None:
    assert step_at(fedadagrad(lr=0.4, tau=1.0, lr_decay=0.25), 3, 1.0) == pytest.approx(
        0.4 * 0.25**2 / (math.sqrt(2) + 1)
    )


@pytest.mark.parametrize("factory", [fedavgm, fedadam, fedyogi, fedadagrad])
def test_default_lr_decay_leaves_every_round_unchanged(factory: object) -> None:
    plain, explicit = factory(), factory(lr_decay=1.0)  # type: ignore[operator]
    assert step_at(plain, 50, 0.3) == step_at(explicit, 50, 0.3) == step_at(plain, 1, 0.3)


@pytest.mark.parametrize(
    ("factory", "value", "message"),
    [
        (fedavgm, 0.0, "strategy.lr_decay must be > 0 and <= 1 for fedavgm, got 0.0"),
        (fedavgm, 1.5, "strategy.lr_decay must be > 0 and <= 1 for fedavgm, got 1.5"),
        (fedyogi, "slow", "strategy.lr_decay must be a number for fedyogi, got 'slow'"),
        (fedadagrad, float("nan"), "strategy.lr_decay must be a number for fedadagrad, got nan"),
    ],
)
def test_bad_lr_decay_is_refused(factory: object, value: object, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        factory(lr_decay=value)  # type: ignore[operator]
    assert str(info.value) == message


def test_lr_decay_reaches_the_strategy_from_the_config() -> None:
    from sheaf.core.config import StrategyConfig
    from sheaf.strategies import build_strategy

    built = build_strategy(StrategyConfig(name="fedavgm", options={"lr": 0.5, "momentum": 0.0, "lr_decay": 0.5}))
    assert step_at(built, 3, 2.0) == pytest.approx(0.25)
    with pytest.raises(ConfigError, match="unknown setting strategy.lr_decay for 'fedavg'"):
        build_strategy(StrategyConfig(name="fedavg", options={"lr_decay": 0.5}))
