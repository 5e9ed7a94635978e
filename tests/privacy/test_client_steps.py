"""The client half: clipping before sending, local noise, and a data owner's own budget."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from sheaf.backends.client_runner import ClientRunner
from sheaf.core.config import TrainConfig, load_config
from sheaf.core.errors import ClientFailure
from sheaf.core.params import Params
from sheaf.data.dataset import ClientData, Split
from sheaf.privacy import (
    BUDGET_STEP,
    LEDGER_KEY,
    LOCAL_DP_STEP,
    PrivacyLedger,
    RoundMechanism,
    epsilon,
    privacy_plan,
    with_client_privacy,
    with_privacy,
)
from sheaf.strategies import RoundContext, fedavg
from sheaf.task.base import EvalResult, FitInstructions, FitResult
from sheaf.task.client import fit_client
from sheaf.task.client_steps import ClientStep

DIM = 50_000


class StepTask:
    """Moves every parameter by ``step`` and reports what a real task would."""

    def __init__(self, step: float) -> None:
        self.step = step

    def init_params(self, seed: int) -> Params:
        return Params({"w": np.zeros(DIM, np.float32)})

    def fit(self, params: Params, data: Split, instructions: FitInstructions) -> FitResult:
        moved = Params({"w": params["w"] + np.float32(self.step)})
        return FitResult(moved, len(data), {"train_loss": 0.5, "steps": 4.0})

    def evaluate(self, params: Params, data: Split) -> EvalResult:
        return EvalResult(0.0, len(data), {})


DATA = ClientData(3, Split(np.zeros((12, 2), np.float32), np.zeros(12, np.int64)), Split(np.zeros((0, 2)), np.zeros(0)))
START = Params({"w": np.full(DIM, 0.25, np.float32)})


def options_for(*settings: str, population: int = 10, round: int = 1) -> tuple[dict, tuple[ClientStep, ...]]:  # type: ignore[type-arg]
    """What a private round sends every client, and the client steps it runs."""
    plan = privacy_plan(load_config(overrides=["privacy.mode=central", *settings]), population, ledgers=True)
    assert plan is not None
    strategy = with_privacy(fedavg(), plan)
    sent = strategy.configure(strategy.init(START), RoundContext(round, START, 0, population))
    return dict(sent.options), strategy.client_steps


def fit(task, sent, round: int = 1, state=None):  # type: ignore[no-untyped-def]
    options, steps = sent
    return fit_client(
        task,
        DATA,
        START,
        round=round,
        train=TrainConfig(),
        run_seed=0,
        options=options,
        client_state=state,
        steps=steps,
    )


def test_a_clipping_client_sends_a_delta_within_the_norm_with_one_example() -> None:
    options = options_for("privacy.clipping=client", "privacy.clip=0.8")
    update, _ = fit(StepTask(0.01), options)  # ||delta|| = 0.01 * sqrt(50000) = 2.24 > 0.8
    assert update.delta.astype(np.float64).l2_norm() <= 0.8
    assert update.num_examples == 1 and update.metrics["train_loss"] == 0.5


def test_adaptive_client_clipping_reports_whether_the_update_was_within_the_norm() -> None:
    options = options_for("privacy.clipping=client", "privacy.adaptive_clip=true", "privacy.count_stddev=5")
    assert fit(StepTask(0.01), options)[0].metrics["dp_below_clip"] == 0.0
    assert fit(StepTask(1e-4), options)[0].metrics["dp_below_clip"] == 1.0


def test_a_local_dp_client_clips_noises_and_sends_nothing_else() -> None:
    options = {**options_for("privacy.clip=0.5")[0], "dp_noise_multiplier": 2.0}
    steps = (BUDGET_STEP, LOCAL_DP_STEP)
    task = with_client_privacy(StepTask(0.0), seeded_noise=True)
    update, _ = fit(task, ({**options, "dp_noise": "seeded"}, steps))
    noise = update.delta["w"].astype(np.float64)
    assert noise.std() == pytest.approx(2.0 * 0.5, rel=0.02)  # z * C on every coordinate
    assert update.num_examples == 1 and update.metrics == {} and update.extras == {}
    again, _ = fit(task, ({**options, "dp_noise": "seeded"}, steps))
    assert np.array_equal(again.delta["w"], update.delta["w"])  # seeded: a simulation repeats


def test_a_client_uses_secure_noise_unless_its_own_policy_accepts_seeded_noise() -> None:
    options = ({**options_for()[0], "dp_noise": "seeded", "dp_noise_multiplier": 1.0}, (LOCAL_DP_STEP,))
    plain = StepTask(0.0)  # a deployed client's task: no policy, so secure noise whatever the server asks
    a, b = fit(plain, options)[0], fit(plain, options)[0]
    assert not np.array_equal(a.delta["w"], b.delta["w"])
    assert a.delta["w"].astype(np.float64).std() == pytest.approx(1.0, rel=0.02)


def test_a_client_with_a_budget_keeps_a_ledger_and_refuses_past_its_limit() -> None:
    options = options_for("sampling=poisson", "fraction=0.3", "privacy.noise_multiplier=1.5")
    mechanism = RoundMechanism("poisson", 1.5, rate=0.3, population=10)
    limit = epsilon(mechanism, 4, 1e-5)  # enough for rounds 1..4, not for round 5
    task = with_client_privacy(StepTask(0.01), {3: limit})
    _, state = fit(task, options, round=2)
    ledger = PrivacyLedger.from_params(state[LEDGER_KEY])
    assert ledger.last_round == 2 and ledger.epsilon(1e-5) == epsilon(mechanism, 2, 1e-5)
    _, state = fit(task, options, round=4, state=state)
    assert PrivacyLedger.from_params(state[LEDGER_KEY]).epsilon(1e-5) == pytest.approx(limit)
    with pytest.raises(ClientFailure, match=r"BudgetExceeded: client 3 refuses round 5: .* past its limit"):
        fit(task, options, round=5, state=state)


def test_a_client_without_a_budget_keeps_no_ledger() -> None:
    _, state = fit(StepTask(0.01), options_for())
    assert state is None


def test_local_dp_charges_each_update_sent_without_amplification() -> None:
    ledger = PrivacyLedger()
    local = RoundMechanism("local", 3.0)
    for round in (2, 9, 11):
        ledger = ledger.charged(local, round)
    assert ledger.events == ((local, 3),) and ledger.epsilon(1e-5) == epsilon(local, 3, 1e-5)


def test_a_client_with_a_budget_refuses_a_round_that_does_not_account_it() -> None:
    task = with_client_privacy(StepTask(0.01), default_budget=50.0)
    with pytest.raises(ClientFailure, match="client 3 has a privacy budget .* not differentially private"):
        fit(task, ({}, ()))  # a run without DP asks for no privacy_budget step
    update, _ = fit(task, options_for())  # one that does: it trains
    assert update.num_examples == 12


def test_a_client_with_a_budget_refuses_every_evaluation_and_one_without_evaluates() -> None:
    """An evaluation sends raw test metrics that nothing noises or accounts, so a client whose
    owner set a limit refuses it whatever the server asks; the refusal is its failure value.

    Before the fix the client evaluated and sent its raw loss; this test failed with
    ``assert False`` (``isinstance(EvalResult(loss=0.0, num_examples=0, metrics={}), ClientFailure)``).
    """
    runner = ClientRunner(with_client_privacy(StepTask(0.01), {3: 50.0}), seed=0)
    refused = runner.evaluate(DATA, START)  # DATA is client 3
    assert isinstance(refused, ClientFailure)
    assert "client 3 has a privacy budget (50)" in refused.reason and "refuses to evaluate" in refused.reason
    assert isinstance(runner.evaluate(dataclasses.replace(DATA, client_id=4), START), EvalResult)
