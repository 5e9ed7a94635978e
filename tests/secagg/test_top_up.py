"""The server's noise top-up under distributed DP: every released sum carries exactly K noise
shares whatever the survivors, a sum of more than K aborts the round with the store
consistent, K bounds the cohort's binomial tail, the top-up follows the clients' seeding
policy, and the released pair is the symmetric shift the accounting needs (exactly checked
on a small discrete sum) where the release without the top-up was not."""

from __future__ import annotations

import dataclasses
import math
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

import sheaf
from sheaf.core.config import load_config
from sheaf.core.errors import AggregationError
from sheaf.core.params import Params
from sheaf.quantize.quantizer import ring_bound, to_ring, to_signed
from sheaf.quantize.randomness import SeededBits
from sheaf.run import RunStore
from sheaf.secagg import plan as plan_module
from sheaf.secagg.accounting import ORDERS, DistributedMechanism, epsilon_from_rdp
from sheaf.secagg.discrete_gaussian import discrete_gaussian
from sheaf.secagg.distributed import distributed_mean, top_up
from sheaf.secagg.plan import SecAggPlan, cohort_bound, secagg_plan
from sheaf.secagg.step import secure_aggregate
from sheaf.strategies.base import MaskedSum, RoundContext

from .test_accounting import _log_discrete_gaussian_sum, _renyi

DDP = ["secagg.enabled=true", "secagg.dp=distributed", "sampling=poisson", "privacy.clip=0.5"]


def ddp_plan(*extra: str, population: int = 200, length: int = 4096) -> SecAggPlan:
    config = load_config(overrides=[*DDP, "fraction=0.1", "privacy.noise_multiplier=1", "rounds=10", *extra])
    plan = secagg_plan(config, population=population, length=length)
    assert plan is not None
    return plan


def noise_only_sum(plan: SecAggPlan, survivors: int, seed: int) -> MaskedSum:
    """The ring sum of `survivors` clients with zero updates: their noise shares alone."""
    bits = SeededBits(np.random.default_rng(seed))
    shares = sum(discrete_gaussian(plan.variance, plan.padded, bits) for _ in range(survivors))
    return MaskedSum(to_ring(np.asarray(shares, np.int64), plan.bits), tuple(range(survivors)), survivors)


def released_shares(plan: SecAggPlan, survivors: int, round: int = 1) -> float:
    """Noise shares in the released model, measured: its squared norm over d' σ² (the
    rotation is orthonormal at a power-of-two length)."""
    step = secure_aggregate(plan, distributed_mean(plan))
    params = Params({"w": np.zeros(plan.length)})
    assert step.apply_masked is not None
    delta, state = step.apply_masked(
        noise_only_sum(plan, survivors, seed=survivors), step.init(params), RoundContext(round, params, 7, 200)
    )
    released = delta["w"] * plan.expected_cohort * plan.scale
    assert state.topped_up == plan.top_up - survivors
    return float(np.sum(released**2)) / (plan.padded * plan.variance)


def test_every_released_sum_carries_k_noise_shares_whatever_the_survivors() -> None:
    plan = ddp_plan()
    assert plan.length == plan.padded and plan.top_up >= 20
    for survivors in (3, plan.top_up // 2, plan.top_up):
        # d' = 4096 coordinates: the empirical variance is within 10% of K (about 4.5 standard errors)
        assert released_shares(plan, survivors) == pytest.approx(plan.top_up, rel=0.1)


def test_the_top_up_follows_the_clients_seeding_policy() -> None:
    seeded = ddp_plan()
    assert seeded.noise == "seeded"
    ring = noise_only_sum(seeded, 5, seed=1)
    assert ring.total is not None
    params = Params({"w": np.zeros(seeded.length)})

    def release(plan: SecAggPlan, round: int) -> np.ndarray:
        step = secure_aggregate(plan, distributed_mean(plan))
        assert step.apply_masked is not None
        delta, _ = step.apply_masked(ring, step.init(params), RoundContext(round, params, 7, 200))
        return np.asarray(delta["w"])

    # Simulation with seeded noise: the same config and seed give the same model.
    assert np.array_equal(release(seeded, 1), release(seeded, 1))
    assert not np.array_equal(release(seeded, 1), release(seeded, 2))
    # Secure noise (every deployment): the top-up comes from the CSPRNG, never the same twice.
    secure = dataclasses.replace(seeded, noise="secure")
    assert not np.array_equal(release(secure, 1), release(secure, 1))


def test_a_sum_past_k_is_refused_before_anything_is_released() -> None:
    plan = ddp_plan()
    assert plan.top_up < plan.max_inputs
    step = secure_aggregate(plan, distributed_mean(plan))
    params = Params({"w": np.zeros(plan.length)})
    assert step.apply_masked is not None
    with pytest.raises(AggregationError, match=f"exceed the {plan.top_up} noise shares"):
        step.apply_masked(
            noise_only_sum(plan, plan.top_up + 1, seed=0), step.init(params), RoundContext(1, params, 7, 200)
        )
    with pytest.raises(AggregationError, match="exceed"):
        top_up(plan, np.zeros(plan.padded, np.uint32), plan.top_up + 1, SeededBits(np.random.default_rng(0)))


def test_survivors_past_k_abort_the_round_and_the_store_stays_consistent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A K far below the cohort (about 10 of 20 a round), so that rounds exceed it.
    monkeypatch.setattr(plan_module, "cohort_bound", lambda population, rate, failure: 6)
    overrides = [
        *DDP, "fraction=0.5", "clients=20", "privacy.noise_multiplier=1.0", "rounds=4", "evaluation.federated=false",
        "backend=inline", "seed=3", f"runs_dir={tmp_path}",
    ]  # fmt: skip
    result = sheaf.simulate(overrides=overrides)
    skipped = [r for r in result.history if not r.aggregated]
    assert skipped, "with K = 6 and about 10 clients a round, some round must exceed K"
    assert all("exceed the 6 noise shares" in r.note for r in skipped)
    spent = [r.privacy["epsilon"] for r in result.history]
    with RunStore.open(result.run_path, readonly=True) as store:
        assert store.last_round == 4
        for index, record in enumerate(store.history()):
            if not record.aggregated:  # nothing released: the model and the privacy spent stay
                assert store.params(record.round).array_equal(store.params(record.round - 1))
                assert index == 0 or spent[index] == spent[index - 1]


def _binomial_tail(n: int, rate: Fraction, k: int) -> Fraction:
    return sum((math.comb(n, j) * rate**j * (1 - rate) ** (n - j) for j in range(k, n + 1)), Fraction(0))


@pytest.mark.parametrize(("population", "rate", "failure"), [(60, "1/10", 1e-6), (200, "1/4", 1e-8), (8, "1/2", 1e-3)])
def test_k_is_the_smallest_bound_on_the_cohorts_tail(population: int, rate: str, failure: float) -> None:
    k = cohort_bound(population, float(Fraction(rate)), failure)
    # With the client in the cohort, the cohort exceeds K when K of the other N - 1 are sampled.
    assert _binomial_tail(population - 1, Fraction(rate), k) <= Fraction(failure)
    assert k == population or _binomial_tail(population - 1, Fraction(rate), k - 1) > Fraction(failure)


def test_the_plan_calibrates_for_k_minus_one_shares_and_adds_delta_k() -> None:
    config = load_config(overrides=[*DDP, "fraction=0.1", "privacy.target_epsilon=3", "rounds=100"])
    plan = secagg_plan(config, population=1000, length=4810)
    assert plan is not None
    failure = 1e-5 / (10 * 100)
    assert plan.top_up_failure == pytest.approx(failure)
    assert plan.top_up == cohort_bound(1000, 0.1, failure) and plan.shares == plan.top_up - 1
    l2, _ = plan.sensitivity
    assert plan.variance == math.ceil((plan.noise_multiplier * l2) ** 2 / (plan.top_up - 1))
    curve = plan.mechanism().round_rdp(plan.top_up - 1)
    assert plan.planned_epsilon == pytest.approx(epsilon_from_rdp(100 * curve, 1e-5), rel=1e-12)
    assert plan.planned_epsilon <= 3.0 + 1e-6
    assert plan.describe()["planned_delta"] == pytest.approx(1e-5 + 100 * failure)
    assert plan.reported_delta(100) == pytest.approx(1.1e-5)
    # The wrap-around bound covers K inputs with K shares of noise.
    assert plan.max_inputs >= plan.top_up
    bound = ring_bound(
        plan.scale, clip=0.5, max_weight=1, inputs=plan.top_up, length=4810, noise_variance=plan.variance
    )
    assert bound <= (1 << (plan.bits - 1)) - 1


def test_the_released_pair_is_a_symmetric_shift_within_the_bound_and_the_old_one_was_not() -> None:
    # The real top-up on a tiny plan (K = 4, σ² = 1) gives the share counts of both worlds: two
    # other survivors without the client, three with it. The released pair's exact divergences,
    # Poisson-sampled, stay within the curve of K - 1 shares, the remove direction below the
    # add direction (the symmetry the proof uses). The release without the top-up (2 shares
    # against 3 plus the shift) exceeds the curve it was accounted with.
    plan = dataclasses.replace(ddp_plan(length=8), variance=1, top_up=4)
    bits = SeededBits(np.random.default_rng(0))
    zero = np.zeros(plan.padded, np.uint32)
    others = 2
    without = others + top_up(plan, zero, others, bits)[1]
    with_client = others + 1 + top_up(plan, zero, others + 1, bits)[1]
    assert without == with_client == plan.top_up
    topped = to_signed(top_up(plan, zero, others, bits)[0], plan.bits)
    assert 0 < np.var(topped) < 2 * (plan.top_up - others)  # the added shares are noise of variance K - s
    reach, shift, rate, variance = 40, 1, 0.5, 1.0

    def pair(p_shares: int, q_shares: int) -> tuple[np.ndarray, np.ndarray]:
        p = _log_discrete_gaussian_sum(variance, p_shares, reach + shift)[shift : shift + 2 * reach + 1]
        q = _log_discrete_gaussian_sum(variance, q_shares, reach + shift)[: 2 * reach + 1]  # shifted by x = 1
        return p, np.logaddexp(math.log1p(-rate) + p, math.log(rate) + q)

    bound = DistributedMechanism(1.0, 1.0, 1, variance, rate).round_rdp(plan.top_up - 1)
    log_p, mixture = pair(without, with_client)
    for index, alpha in enumerate(ORDERS[:20]):
        add, remove = _renyi(mixture, log_p, alpha), _renyi(log_p, mixture, alpha)
        assert remove <= add * (1 + 1e-9) + 1e-12
        assert add <= bound[index] * (1 + 1e-9) + 1e-12
    old = DistributedMechanism(1.0, 1.0, 1, variance, rate).round_rdp(others)
    log_p, mixture = pair(others, others + 1)
    assert any(_renyi(mixture, log_p, alpha) > old[i] for i, alpha in enumerate(ORDERS[:20]))
