"""Secure aggregation as a strategy step, through the round loop: the same model as plain
aggregation up to the quantiser's stated error, the stand-in equal to the protocol bit for
bit, per-update strategies refused before the run, aborted rounds skipped with the store
consistent, and distributed DP accounted every round."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

import sheaf
from sheaf.core.config import load_config
from sheaf.core.errors import AggregationError, ConfigError
from sheaf.core.params import Params
from sheaf.core.update import Update
from sheaf.run import RunStore
from sheaf.run.assemble import assemble
from sheaf.secagg.accounting import epsilon_from_rdp
from sheaf.secagg.plan import secagg_plan
from sheaf.secagg.step import INPUT_GROUP, SECAGG_ENCODE, round_seeds, with_secure_aggregation
from sheaf.strategies import RoundContext, fedavg
from sheaf.task.base import EvalResult, FitInstructions, FitResult
from sheaf.task.client_steps import ClientContext

BASE = ["rounds=2", "clients=10", "fraction=0.6", "evaluation.federated=false", "backend=inline", "seed=3"]


def run(tmp_path: Path, *extra: str, name: str = "run") -> sheaf.SimulationResult:
    return sheaf.simulate(overrides=[*BASE, f"runs_dir={tmp_path}", f"name={name}", *extra])


class Fixed:
    """A task whose 'training' moves the params to a client-specific point."""

    def init_params(self, seed: int) -> Params:
        return Params({"w": np.zeros(5), "b": np.zeros(2, np.float32)})

    def fit(self, params: Params, data: object, instructions: FitInstructions) -> FitResult:
        rng = np.random.default_rng(instructions.client_id)
        moved = Params({"w": rng.normal(size=5), "b": rng.normal(size=2).astype(np.float32)})
        return FitResult(moved, 3 + instructions.client_id, {"train_loss": 1.0})

    def evaluate(self, params: Params, data: object) -> EvalResult:
        return EvalResult(0.0, 1)


def encoded_updates(strategy: sheaf.strategies.Strategy, params: Params, clients: range) -> list[Update]:
    """Each client trained by :class:`Fixed` and encoded by the strategy's client half."""
    ctx = RoundContext(1, params, 0, len(clients))
    options = dict(strategy.configure(strategy.init(params), ctx).options)
    updates = []
    for client in clients:
        instructions = FitInstructions(1, client, load_config().train, seed=client, options=options)
        task = Fixed()

        def fit(p: Params, i: FitInstructions, task: Fixed = task) -> FitResult:
            return task.fit(p, None, i)

        result = SECAGG_ENCODE.run(fit, params, instructions, ClientContext(task, None))  # type: ignore[arg-type]
        updates.append(Update.from_params(client, params, result.params, result.num_examples, {}, result.extras))
    return updates


def test_the_securely_aggregated_mean_is_the_plain_mean_within_the_stated_error() -> None:
    params = Fixed().init_params(0)
    plan = secagg_plan(
        load_config(overrides=["secagg.enabled=true", "clients=8", "fraction=1"]), population=8, length=7
    )
    assert plan is not None
    strategy = with_secure_aggregation(fedavg(), plan)
    updates = encoded_updates(strategy, params, range(8))
    assert all(u.delta.l2_norm() == 0 for u in updates)  # nothing of the update leaves but its ring vector

    new, _, _ = strategy.aggregate(updates, strategy.init(params), RoundContext(1, params, 0, 8))

    moves = [(Fixed().fit(params, None, FitInstructions(1, c, load_config().train, 0)), c) for c in range(8)]
    weights = [r.num_examples for r, _ in moves]
    plain = sum(w * (r.params.flatten() - params.flatten()) for (r, _), w in zip(moves, weights)) / sum(weights)
    error = float(np.linalg.norm(new.flatten() - params.flatten() - plain))
    bound = plan.quantizer().error_bound(8) / sum(weights) + 1e-6  # + float32 rounding of 'b'
    assert error <= bound


def test_the_stand_in_gives_the_protocols_model_bit_for_bit(tmp_path: Path) -> None:
    common = ["secagg.enabled=true", "secagg.dropout=0.25", "strategy=fedavgm"]
    real = run(tmp_path, *common, name="real")
    fast = run(tmp_path, *common, "secagg.stand_in=true", name="fast")
    assert real.params.array_equal(fast.params)
    assert [r.fit for r in real.history] == [r.fit for r in fast.history]


def test_secure_aggregation_keeps_the_plain_model_to_quantisation_precision(tmp_path: Path) -> None:
    plain = run(tmp_path, name="plain")
    secure = run(tmp_path, "secagg.enabled=true", name="secure")
    difference = (secure.params.astype(np.float64) - plain.params.astype(np.float64)).l2_norm()
    assert 0 < difference < 1e-4 * max(1.0, plain.params.l2_norm())
    assert secure.summary()["secure_aggregation"] is True and secure.summary()["distributed_dp"] is False
    with RunStore.open(secure.run_path, readonly=True) as store:
        assert store.meta["secagg"]["dp"] == "none"
        assert store.meta["strategy"] == "secagg-fedavg"
        assert all(r.fit["secagg_survivors"] == 6 for r in store.history())


@pytest.mark.parametrize("strategy", ["fedavgm", "fedadam", "fedyogi", "fedadagrad", "fedprox"])
def test_every_sum_only_strategy_runs_through_secure_aggregation(tmp_path: Path, strategy: str) -> None:
    result = run(tmp_path, f"strategy={strategy}", "secagg.enabled=true", "secagg.stand_in=true")
    assert result.history.rounds_completed == 2 and all(r.aggregated for r in result.history)
    assert result.params.all_finite()


@pytest.mark.parametrize(
    ("strategy", "why"),
    [
        ("krum", "aggregate step 'krum' needs each one"),
        ("median", "needs each one"),
        ("scaffold", "needs each one"),
        ("fednova", "needs each one"),
        ("qfedavg", "needs each one"),
    ],
)
def test_strategies_that_read_single_updates_are_refused_before_the_run(
    tmp_path: Path, strategy: str, why: str
) -> None:
    with pytest.raises(ConfigError, match=why) as refused:
        run(tmp_path, f"strategy={strategy}", "secagg.enabled=true")
    assert "\n" not in str(refused.value)
    assert not list(tmp_path.iterdir())  # refused before a store was made


def test_server_clipped_central_dp_is_refused_but_client_clipped_runs(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="private_mean"):
        run(tmp_path, "secagg.enabled=true", "privacy.mode=central")
    result = run(tmp_path, "secagg.enabled=true", "privacy.mode=central", "privacy.clipping=client", name="c")
    assert result.history.final_privacy["epsilon"] > 0


class StopAfter:
    """A listener that stops the run (as a kill would) once ``round`` is committed."""

    def __init__(self, round: int) -> None:
        self.round = round

    def on_start(self, *args: object) -> None:
        pass

    def on_round(self, record: sheaf.RoundRecord) -> None:
        if record.round == self.round:
            raise KeyboardInterrupt


def test_a_round_below_the_threshold_aborts_and_the_store_stays_consistent(tmp_path: Path) -> None:
    extra = ["secagg.enabled=true", "secagg.dropout=0.8", "rounds=4"]
    result = run(tmp_path, *extra, name="whole")
    skipped = [r for r in result.history if not r.aggregated]
    assert skipped, "at an 80% dropout rate some round must abort"
    assert all("secure aggregation aborted, nothing revealed" in r.note for r in skipped)
    with RunStore.open(result.run_path, readonly=True) as store:
        assert store.last_round == 4
        for record in store.history():
            if not record.aggregated:  # an aborted round keeps the model it started from
                assert store.params(record.round).array_equal(store.params(record.round - 1))
    # A run stopped after round 2 resumes and ends with the same model, bit for bit.
    with pytest.raises(KeyboardInterrupt):
        sheaf.simulate(overrides=[*BASE, f"runs_dir={tmp_path}", "name=stopped", *extra], listener=StopAfter(2))
    resumed = run(tmp_path, *extra, name="stopped")
    assert resumed.params.array_equal(result.params)
    assert [r.note for r in resumed.history] == [r.note for r in result.history]


def test_too_few_clients_per_round_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="at least 3 clients"):
        run(tmp_path, "secagg.enabled=true", "clients=4", "fraction=0.5")


def test_distributed_dp_accounts_the_surviving_noise_every_round(tmp_path: Path) -> None:
    extra = [
        "secagg.enabled=true",
        "secagg.dp=distributed",
        "sampling=poisson",
        "fraction=0.5",
        "clients=20",
        "privacy.noise_multiplier=1.0",
        "privacy.clip=0.5",
        "secagg.dropout=0.2",
        "rounds=3",
    ]
    result = run(tmp_path, *extra)
    parts = assemble(load_config(overrides=[*BASE, *extra]), population=20, task=Fixed())
    assert parts.secagg is not None
    plan = parts.secagg
    mechanism = plan.mechanism()
    rdp = np.zeros_like(mechanism.round_rdp(1))
    rdp_server = rdp.copy()
    for record in result.history:
        if record.aggregated:
            # Released sums carry K shares (K - 1 counted); the server knows its top-up: s - 1.
            survivors = int(record.fit["secagg_survivors"])
            assert survivors + record.fit["secagg_top_up"] == plan.top_up
            rdp = rdp + mechanism.round_rdp(plan.top_up - 1)
            rdp_server = rdp_server + mechanism.round_rdp(survivors - 1, sampled=False)
        assert record.privacy["epsilon"] == pytest.approx(epsilon_from_rdp(rdp, 1e-5), rel=1e-12)
        assert record.privacy["epsilon_server"] == pytest.approx(epsilon_from_rdp(rdp_server, 1e-5), rel=1e-12)
        # delta covers the chance that any of the run's rounds exceeds K: δ + rounds δ_K
        assert record.privacy["delta"] == pytest.approx(1e-5 + 3 * plan.top_up_failure, rel=1e-12)
        assert record.privacy["epsilon_server"] >= record.privacy["epsilon"]
    assert plan.top_up_failure == pytest.approx(1e-5 / (10 * 3))
    summary = result.summary()
    assert summary["distributed_dp"] is True and math.isfinite(summary["epsilon"])
    # The same seed gives the same (seeded) noise, model and epsilon: a reproducible simulation.
    again = run(tmp_path, *extra, name="again")
    assert again.params.array_equal(result.params)


def test_distributed_dp_refuses_what_it_cannot_account(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="sampling=poisson"):
        run(tmp_path, "secagg.enabled=true", "secagg.dp=distributed")
    with pytest.raises(ConfigError, match="privacy.mode=none"):
        run(tmp_path, "secagg.enabled=true", "secagg.dp=distributed", "sampling=poisson", "privacy.mode=central")
    with pytest.raises(ConfigError, match="secagg.enabled=true"):
        run(tmp_path, "secagg.dp=distributed")


def test_a_deployment_runs_secure_aggregation_with_secure_bits_and_refuses_simulated_settings() -> None:
    parts = assemble(
        load_config(overrides=["secagg.enabled=true", "privacy.noise=seeded"]), population=10, task=Fixed(),
        deployed=True,
    )  # fmt: skip
    assert parts.secagg is not None and parts.secagg.noise == "secure"
    assert parts.meta["secagg"]["noise"] == "secure"
    for simulated in ("secagg.dropout=0.1", "secagg.stand_in=true"):
        config = load_config(overrides=["secagg.enabled=true", simulated])
        with pytest.raises(ConfigError, match="a deployment runs the real protocol with its real dropouts"):
            assemble(config, population=10, task=Fixed(), deployed=True)


def test_a_malformed_input_takes_no_part_and_too_few_inputs_abort() -> None:
    params = Fixed().init_params(0)
    plan = secagg_plan(
        load_config(overrides=["secagg.enabled=true", "clients=8", "fraction=1"]), population=8, length=7
    )
    assert plan is not None
    strategy = with_secure_aggregation(fedavg(), plan)
    updates = encoded_updates(strategy, params, range(3))
    broken = updates[0].extras[INPUT_GROUP]["input"].copy()
    broken[0] = 0.5  # not a ring element
    updates[0] = Update(0, updates[0].delta, 3, {}, {INPUT_GROUP: Params({"input": broken})})
    with pytest.raises(AggregationError, match="at least 3 inputs"):
        strategy.aggregate(updates, strategy.init(params), RoundContext(1, params, 0, 8))


def test_round_seeds_follow_the_run_seed() -> None:
    assert round_seeds(1, 2) == round_seeds(1, 2) != round_seeds(1, 3)


def test_a_distributed_plan_never_asks_for_a_variance_past_the_exact_samplers_range() -> None:
    # Six clients, 11,000 parameters, z = 1: the variance at the sampler's limit once came out
    # one past it (a float product rounded up), and every client's fit failed.
    from sheaf.secagg.discrete_gaussian import MAX_VARIANCE

    overrides = ["secagg.enabled=true", "secagg.dp=distributed", "sampling=poisson", "privacy.noise_multiplier=1"]
    config = load_config(overrides=[*overrides, "privacy.clip=1", "clients=6", "fraction=1"])
    plan = secagg_plan(config, population=6, length=11_000)
    assert plan is not None and 0 < plan.variance <= MAX_VARIANCE
