"""Whole private runs through the real loop, store, CLI and report."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import dp_accounting
import numpy as np
import pytest
from dp_accounting import rdp
from typer.testing import CliRunner

from sheaf.backends.base import SimulationEnv
from sheaf.backends.inline import InlineBackend
from sheaf.cli.app import app
from sheaf.core.config import RunConfig, load_config
from sheaf.core.errors import ConfigError
from sheaf.core.params import Params
from sheaf.core.sampling import sample_cohort
from sheaf.data.catalog import build_federation
from sheaf.data.dataset import Split
from sheaf.privacy import (
    EVALUATION_OFF,
    LEDGER_KEY,
    PrivacyLedger,
    RoundMechanism,
    epsilon,
    privacy_plan,
    with_privacy,
)
from sheaf.run.assemble import assemble, open_or_create_store
from sheaf.run.loop import Federated, run_rounds
from sheaf.run.report import report_run
from sheaf.run.simulate import simulate
from sheaf.run.store import RunStore
from sheaf.strategies import chain, fedavg
from sheaf.task.base import EvalResult, FitInstructions, FitResult
from tests.privacy.rogue import ROGUE, ROGUE_CLIP
from tests.run.test_simulate import StopAfter

#: 10 IID digits clients, Poisson sampling at rate 0.4, 4 rounds, DP-FedAvg.
PRIVATE = [
    "rounds=4",
    "clients=10",
    "partition=iid",
    "fraction=0.4",
    "sampling=poisson",
    "min_clients=1",
    "evaluation.interval=2",
    "privacy.mode=central",
    "privacy.noise_multiplier=0.8",
    "privacy.clip=2",
]


def config(runs_dir: str, *extra: str) -> RunConfig:
    return load_config(overrides=[*PRIVATE, runs_dir, *extra])


def test_every_round_records_the_epsilon_dp_accounting_computes_for_the_run(runs_dir: str) -> None:
    result = simulate(config(runs_dir))
    for record in result.history:
        event = dp_accounting.SelfComposedDpEvent(
            dp_accounting.PoissonSampledDpEvent(0.4, dp_accounting.GaussianDpEvent(0.8)), record.round
        )
        assert record.privacy["epsilon"] == rdp.RdpAccountant().compose(event).get_epsilon(1e-5)
        assert record.privacy["delta"] == 1e-5 and record.privacy["rounds"] == record.round
    with RunStore.open(result.run_path) as store:
        assert list(store.history()) == list(result.history)
        assert store.meta["privacy"]["noise_multiplier"] == 0.8 and store.meta["strategy"] == "dp-fedavg"
    summary = result.summary()
    assert summary["epsilon"] == result.history[-1].privacy["epsilon"] and summary["delta"] == 1e-5


def test_poisson_sampling_draws_cohorts_of_varying_size_around_the_rate(runs_dir: str) -> None:
    result = simulate(config(runs_dir, "rounds=8", "privacy.mode=none", "evaluation.federated=false"))
    sizes = [r.sampled for r in result.history]
    assert len(set(sizes)) > 1 and 1 <= np.mean(sizes) <= 7


def test_a_resumed_run_reports_the_same_epsilon_and_ends_with_the_same_model(runs_dir: str) -> None:
    cfg = config(
        runs_dir, "name=private", "privacy.adaptive_clip=true", "privacy.count_stddev=2", "privacy.noise_multiplier=0.5"
    )
    with pytest.raises(KeyboardInterrupt):
        simulate(cfg, listener=StopAfter(2))
    resumed = simulate(cfg)
    straight = simulate(cfg.replace(name="straight"))
    assert [r.privacy for r in resumed.history] == [r.privacy for r in straight.history]
    assert resumed.history[-1].privacy["clip"] != 2.0  # the adaptive clip norm moved and was restored
    assert resumed.params.array_equal(straight.params)


def test_client_clipping_gives_the_same_model_as_server_clipping(runs_dir: str) -> None:
    server = simulate(config(runs_dir, "privacy.clip=0.5"))
    client = simulate(config(runs_dir, "privacy.clip=0.5", "privacy.clipping=client"))
    for name in server.params:
        np.testing.assert_allclose(client.params[name], server.params[name], rtol=1e-4, atol=1e-6)
    assert client.summary()["epsilon"] == server.summary()["epsilon"]


def test_seeded_runs_repeat_and_secure_runs_do_not(runs_dir: str) -> None:
    a, b = simulate(config(runs_dir, "rounds=1")), simulate(config(runs_dir, "rounds=1"))
    assert a.params.array_equal(b.params)
    c, d = (simulate(config(runs_dir, "rounds=1", "privacy.noise=secure")) for _ in range(2))
    assert not c.params.array_equal(d.params)
    assert c.summary()["epsilon"] == a.summary()["epsilon"]


def test_a_client_at_its_budget_refuses_and_the_server_records_a_dropout(runs_dir: str) -> None:
    cohorts = [set(sample_cohort(10, 0, seed=0, round=r, rate=0.4).tolist()) for r in range(1, 7)]
    owner = min(c for c in cohorts[0] if any(c in later for later in cohorts[2:]))  # in round 1, and again later
    mechanism = RoundMechanism("poisson", 0.8, rate=0.4, population=10)
    limit = (epsilon(mechanism, 1, 1e-5) + epsilon(mechanism, 2, 1e-5)) / 2  # round 1 fits, round 2 does not
    result = simulate(config(runs_dir, "rounds=6", f"privacy.client_budgets={{{owner} = {limit}}}"))
    with RunStore.open(result.run_path) as store:
        refusals = [f for f in store.failures() if f[1] == owner]
        took_part = [r for r, rec in store.client_records(phase="fit") if rec.client_id == owner]
        ledger = store.client_states([owner])[owner][LEDGER_KEY]
    assert took_part == [1]
    assert [r for r, *_ in refusals] == [r for r in range(2, 7) if owner in cohorts[r - 1]]
    assert all(
        phase == "fit" and "refuses round" in reason and "past its limit" in reason for _, _, phase, reason in refusals
    )
    assert PrivacyLedger.from_params(ledger).epsilon(1e-5) == epsilon(mechanism, 1, 1e-5) <= limit
    assert sum(r.failed for r in result.history) == len(refusals)  # everyone else went on


def test_local_dp_reports_the_epsilon_of_the_client_that_sent_most(runs_dir: str) -> None:
    result = simulate(config(runs_dir, "privacy.mode=local", "privacy.noise_multiplier=3"))
    with RunStore.open(result.run_path) as store:
        counts = np.bincount([rec.client_id for _, rec in store.client_records(phase="fit")], minlength=10)
        fits = store.client_records(phase="fit")
    assert all(rec.metrics == {} and rec.num_examples == 1 for _, rec in fits)  # nothing else left the clients
    expected = epsilon(RoundMechanism("local", 3.0), int(counts.max()), 1e-5)
    assert result.summary()["epsilon"] == expected


def test_a_target_epsilon_is_calibrated_and_met(runs_dir: str) -> None:
    result = simulate(config(runs_dir, "privacy.target_epsilon=3", "privacy.accountant=pld"))
    assert result.summary()["epsilon"] <= 3.0
    assert result.summary()["epsilon"] == pytest.approx(3.0, abs=0.01)
    assert result.summary()["noise_multiplier"] != 0.8


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            ["privacy.accountant=pld", "sampling=fixed"],
            "pld supports Poisson sampling only; set strategy.sampling=poisson",
        ),
        (["privacy.mode=local", "min_clients=2"], "privacy.mode=local needs strategy.min_clients=1"),
        (["privacy.adaptive_clip=true", "privacy.mode=local"], "adaptive_clip needs privacy.mode=central"),
        (["strategy=median"], "works with strategies built on the weighted mean"),
        (["privacy.mode=none", "privacy.client_budget=2"], "need privacy.mode=central or local"),
        (["privacy.client_budgets={12 = 1.0}"], "names client 12, but there are only 10"),
        (["privacy.accountant=gdp"], "privacy.accountant must be one of: rdp, pld"),
        (
            ["evaluation.federated=true"],
            "evaluation.federated=true would release every evaluating client's raw test loss",
        ),
        (["privacy.mode=local", "evaluation.federated=true"], "outside privacy.mode=local's mechanism"),
        (["evaluation.federated=sometimes"], "evaluation.federated must be true, false or auto"),
    ],
)
def test_settings_that_do_not_fit_are_one_clear_error(runs_dir: str, extra: list[str], message: str) -> None:
    result = CliRunner().invoke(
        app, ["simulate", "--json", *[a for s in [*PRIVATE, runs_dir, *extra] for a in ("--set", s)]]
    )
    assert result.exit_code == 2 and message in result.output
    assert result.output.startswith("error: ") and result.output.count("\n") == 1


def test_the_cli_shows_epsilon_and_prints_it_in_the_json_summary(runs_dir: str, tmp_path: Path) -> None:
    args = [a for s in [*PRIVATE, runs_dir] for a in ("--set", s)]
    shown = CliRunner().invoke(app, ["simulate", *args], env={"COLUMNS": "200"})
    assert shown.exit_code == 0, shown.output
    assert "ε spent" in shown.stdout and "privacy spent: ε at δ = 1e-05" in shown.stdout
    assert "ε " in shown.stderr  # the progress bar
    assert shown.stderr.count("federated evaluation is off under differential privacy") == 1
    summary = json.loads(CliRunner().invoke(app, ["simulate", "--json", *args]).stdout)
    assert summary["epsilon"] > 0 and summary["delta"] == 1e-5
    page = report_run(summary["run_path"], tmp_path / "report")[-1].read_text()
    assert "epsilon spent" in page and "privacy spent: epsilon at delta = 1e-05" in page


def test_a_config_with_privacy_round_trips_through_toml_and_the_config_command(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["config", "--set", "privacy.client_budgets={3 = 1.5}", "--set", "privacy.mode=central"]
    )
    path = tmp_path / "run.toml"
    path.write_text(result.stdout)
    cfg = load_config(path)
    assert cfg.privacy.client_budgets == {"3": 1.5} and cfg.privacy.mode == "central"
    with pytest.raises(ConfigError, match="privacy.client_budgets.3 must be an epsilon > 0"):
        load_config(overrides=["privacy.client_budgets={3 = -1}"])


def test_every_round_that_reached_the_clients_is_released_and_charged_whatever_number_arrived(runs_dir: str) -> None:
    """With Poisson sampling the fixed-denominator mean needs no minimum, and a decision on
    the raw count of arrivals would release that count un-noised: 30 clients, q = 0.1 (3
    expected a round), strategy.min_clients = 3.

    Before the fix the rounds where fewer than 3 arrived were skipped and not charged; this
    test failed with ``assert [True, True, True, False, True, False, ...] == [True] * 10``.
    """
    sampled = [len(sample_cohort(30, 0, seed=0, round=r, rate=0.1)) for r in range(1, 11)]
    assert min(sampled) < 3 <= max(sampled)  # rounds on both sides of the old threshold
    result = simulate(
        config(runs_dir, "clients=30", "fraction=0.1", "min_clients=3", "rounds=10", "evaluation.federated=false")
    )
    assert [r.sampled for r in result.history] == sampled
    assert [r.aggregated for r in result.history] == [True] * 10
    assert [r.privacy["rounds"] for r in result.history] == list(range(1, 11))
    one = dp_accounting.PoissonSampledDpEvent(0.1, dp_accounting.GaussianDpEvent(0.8))
    for record in result.history:
        event = dp_accounting.SelfComposedDpEvent(one, record.round)
        assert record.privacy["epsilon"] == rdp.RdpAccountant().compose(event).get_epsilon(1e-5)


def test_a_fixed_size_round_with_a_dropout_below_min_clients_is_released_and_charged(runs_dir: str) -> None:
    """Fixed-size cohorts of 3 of 10 with strategy.min_clients = 3; client 1, in rounds 1, 2 and
    4, refuses every round (its budget is below one round's epsilon), so 2 updates arrive there.

    Skipping on the raw count would make a round's output (a model, or none) depend on
    whether one client's update arrived: no noise hides that, so charging the skipped round
    would not be enough. The round is released and charged instead. Before the fix rounds
    1, 2 and 4 were skipped uncharged; this test failed with
    ``assert [False, False, True, False] == [True, True, True, True]``.
    """
    result = simulate(
        config(
            runs_dir,
            "sampling=fixed",
            "fraction=0.3",
            "min_clients=3",
            "evaluation.federated=false",
            "privacy.client_budgets={1 = 0.001}",
        )
    )
    assert [r.sampled for r in result.history] == [3, 3, 3, 3]
    assert [r.failed for r in result.history] == [1, 1, 0, 1]
    assert [r.aggregated for r in result.history] == [True, True, True, True]
    mechanism = RoundMechanism("fixed", 0.8, population=10, cohort=3)
    assert [r.privacy["epsilon"] for r in result.history] == [epsilon(mechanism, r, 1e-5) for r in range(1, 5)]


def test_a_private_run_evaluates_on_no_client_and_says_so(runs_dir: str) -> None:
    """Federated evaluation is off by default under differential privacy; client 9, which
    refuses every round (its budget is below one round's epsilon), sends nothing at all.

    Before the fix federated evaluation ran by default under DP and client 9, having refused
    every training round, still sent its raw test loss, accuracy and test-set size; this test
    failed with ``assert 9 not in [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]``.
    """
    result = simulate(config(runs_dir, "privacy.client_budgets={9 = 0.001}"))  # evaluation left at its default
    with RunStore.open(result.run_path) as store:
        fits = [rec.client_id for _, rec in store.client_records(phase="fit")]
        evaluated = [rec.client_id for _, rec in store.client_records(phase="evaluate")]
        refusals = [reason for _, cid, _, reason in store.failures() if cid == 9]
        note = store.meta.get("federated_evaluation")
    assert 9 not in fits and refusals and all("refuses round" in r for r in refusals)
    assert 9 not in evaluated
    assert evaluated == [] and all(not r.federated for r in result.history)
    assert note == EVALUATION_OFF


@pytest.mark.e2e
def test_a_client_that_skips_clipping_is_dropped_where_the_pool_adds_the_updates_up(runs_dir: str) -> None:
    """Client clipping at C = 2 (no noise) on the sum-only path: pool workers add the updates
    up and the server sees only their sum, so nothing re-clips there. Client 3 runs a
    ``dp_clip`` that does not clip and sends its delta blown up 1e5 times: the acceptance
    rule, which travels with the cohort to the workers, refuses it, and it is recorded as
    that client's dropout.

    Before d6ae059 (the rule's norm bound) a worker added it to its sum; this test failed
    with ``assert [] == [2]`` (client 3, sampled in round 2, was not dropped).
    """
    plan = privacy_plan(
        load_config(overrides=[*PRIVATE, "privacy.clipping=client", "privacy.noise_multiplier=0"]), population=10
    )
    assert plan is not None
    honest = with_privacy(fedavg(), plan)
    assert not honest.reads_updates  # the sum-only path: workers return their partial sums
    rogue = dataclasses.replace(
        honest.aggregator, client=dataclasses.replace(honest.aggregator.client, steps=(ROGUE_CLIP,))
    )
    strategy = chain(rogue, *honest.server_steps, name=honest.name)
    cohorts = [sample_cohort(10, 0, seed=0, round=r, rate=0.4).tolist() for r in range(1, 5)]
    result = simulate(
        config(runs_dir, "backend=pool", "engine.workers=2", "privacy.mode=none", "evaluation.federated=false"),
        strategy=strategy,
    )
    with RunStore.open(result.run_path) as store:
        dropped = [(r, cid) for r, cid, phase, _ in store.failures() if phase == "fit"]
        reasons = [reason for _, _, _, reason in store.failures()]
    assert [r for r, cid in dropped] == [r for r in range(1, 5) if ROGUE in cohorts[r - 1]]
    assert {cid for _, cid in dropped} == {ROGUE}
    assert all("update rejected" in why and "accepts updates of L2 norm at most 2" in why for why in reasons)
    # Without noise a round's update is the sum of clipped deltas over m = 4: at most C per client.
    assert all(r.fit["update_norm"] <= 2.0 * len(c) / 4 for r, c in zip(result.history, cohorts, strict=True))


class LongStepTask:
    """Every client moves each of 16 weights by 0.01; client 3 by 1 (its delta is 100 times longer)."""

    def init_params(self, seed: int) -> Params:
        return Params({"w": np.zeros(16, np.float32)})

    def fit(self, params: Params, data: Split, instructions: FitInstructions) -> FitResult:
        step = 1.0 if instructions.client_id == 3 else 0.01
        return FitResult(Params({"w": params["w"] + np.float32(step)}), len(data))

    def evaluate(self, params: Params, data: Split) -> EvalResult:
        return EvalResult(0.0, len(data))


def test_a_deployed_private_run_bounds_no_update_by_what_earlier_rounds_raw_updates_were(tmp_path: Path) -> None:
    """A deployment's operator bounds an update by ``server.max_norm_ratio`` (10) times the median
    length of the previous round's updates. That median is an un-noised statistic of other
    clients' data: bounding by it would make whether client 3's update counts in round r
    depend on who took part in round r − 1, which the accountant does not charge. With
    server clipping at C = 1 nothing needs it: client 3's long update is clipped, not refused.

    Before the fix client 3 was refused from round 2 on; this test failed with
    ``assert [2, 3, 4] == []`` (its rounds of refusal: "accepts updates of L2 norm at most 0.4, got 4").
    """
    cfg = config(f"runs_dir={tmp_path}", "fraction=1", "privacy.clip=1", "privacy.noise_multiplier=0")
    federation = build_federation(cfg.data, cfg.seed)
    parts = assemble(cfg, population=federation.num_clients, task=LongStepTask(), deployed=True)
    assert parts.limits is not None and parts.limits.max_norm_ratio == 10
    store = open_or_create_store(tmp_path / "run.sqlite", cfg, parts.initial, parts.strategy.init(parts.initial), {})
    backend = InlineBackend()
    backend.start(SimulationEnv(parts.task, federation, cfg.seed, client_steps=parts.client_steps))
    try:
        history, _ = run_rounds(Federated(cfg, parts.task, federation, parts.strategy, backend, store, parts.limits))
        refused = [r for r, cid, phase, _ in store.failures() if cid == 3 and phase == "fit"]
    finally:
        backend.close()
        store.close()
    assert refused == []
    assert [record.completed for record in history] == [10, 10, 10, 10]


def test_a_private_aggregate_refused_as_exploding_is_still_charged(runs_dir: str) -> None:
    """The loop refuses to serve an aggregate that moves each parameter by more than 1e4 (root
    mean square). Here C = 1e6 makes the noise alone that large. The refusal is decided on the
    noised aggregate — a release — so the round is charged even though its model is not served.

    Before the fix the refused rounds were not charged; this test failed with
    ``assert [0.0, 0.0, 0.0, 0.0] == [1.0, 2.0, 3.0, 4.0]`` (the rounds the ledger counted).
    """
    result = simulate(config(runs_dir, "privacy.clip=1e6", "privacy.noise_multiplier=1"))
    assert [r.aggregated for r in result.history] == [False] * 4
    assert all("aggregate refused" in r.note for r in result.history)
    assert [r.privacy["rounds"] for r in result.history] == [1.0, 2.0, 3.0, 4.0]
    mechanism = RoundMechanism("poisson", 1.0, rate=0.4, population=10)
    assert [r.privacy["epsilon"] for r in result.history] == [epsilon(mechanism, r, 1e-5) for r in range(1, 5)]
