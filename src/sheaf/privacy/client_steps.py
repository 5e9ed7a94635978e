"""The client half of differential privacy: the budget check, clipping, and local noise.

Three client steps (:mod:`sheaf.task.client_steps`), run by ``fit_client`` wherever the
client runs; they are the client half of :func:`~sheaf.privacy.aggregation.private_mean`,
chosen by the run's plan (:func:`privacy_client_steps`):

- ``privacy_budget`` — if the client has an epsilon limit (its own :class:`ClientPrivacy`),
  reads its ledger from its state, and refuses the round (``BudgetExceeded``: a dropout
  with the reason recorded) if taking part would spend more than the limit; otherwise it
  trains and keeps the charged ledger as its new state.
- ``dp_clip`` — central DP with client-side clipping: clips its delta to the round's clip
  norm (option ``dp_clip``) so the server needs only the sum, reports whether it was
  within the norm (adaptive clipping), and sends one example as its weight (the mean is
  uniform, and its example count is its own business).
- ``local_dp`` — local DP: clips its delta, adds Gaussian noise of standard deviation
  ``z · C`` from a secure source (seeded only if its own policy allows), and sends it with
  no metrics and one example: nothing else about its data leaves it.

Example:
    >>> [step.name for step in PRIVACY_STEPS]
    ['privacy_budget', 'dp_clip', 'local_dp']
    >>> from sheaf.core.config import load_config
    >>> from sheaf.privacy.plan import privacy_plan
    >>> plan = privacy_plan(load_config(overrides=["privacy.mode=local", "min_clients=1"]), population=10, ledgers=True)
    >>> [step.name for step in privacy_client_steps(plan)]
    ['privacy_budget', 'local_dp']

References:
    McMahan, Ramage, Talwar, Zhang. Learning Differentially Private Recurrent Language
    Models. ICLR 2018. Andrew, Thakkar, McMahan, Ramaswamy. Differentially Private Learning
    with Adaptive Clipping. NeurIPS 2021. Feldman, Zrnic. Individual Privacy Accounting via
    a Rényi Filter. NeurIPS 2021.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from sheaf.core.errors import TaskError
from sheaf.core.params import Params
from sheaf.core.rng import Purpose
from sheaf.privacy.clipping import clip_delta, clip_sent
from sheaf.privacy.ledger import LEDGER_KEY, BudgetExceeded, PrivacyLedger, client_privacy
from sheaf.privacy.noise import NoiseSource, SecureNoise, SeededNoise
from sheaf.privacy.plan import BELOW_CLIP_METRIC, CLIP_OPTION, PrivacyPlan, mechanism_from_options
from sheaf.task.base import FitInstructions, FitResult
from sheaf.task.client_steps import ClientContext, ClientStep, FitFn, merged_state

__all__ = ["BUDGET_STEP", "DP_CLIP_STEP", "LOCAL_DP_STEP", "PRIVACY_STEPS", "client_noise", "privacy_client_steps"]


def _number(instructions: FitInstructions, key: str) -> float:
    value = instructions.options.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
        raise TaskError(f"differential privacy needs option {key!r} as a number >= 0 from the server, got {value!r}")
    return float(value)


def client_noise(instructions: FitInstructions, client: ClientContext) -> NoiseSource:
    """The noise a client adds itself: secure, unless the server asks for seeded noise *and*
    the client's own policy accepts it (simulated clients only)."""
    policy = client_privacy(client.task, instructions.client_id)
    if instructions.options.get("dp_noise") == "seeded" and policy.seeded_noise:
        sequence = np.random.SeedSequence([instructions.seed, int(Purpose.NOISE)])
        return SeededNoise(np.random.Generator(np.random.PCG64(sequence)))
    return SecureNoise()


def _privacy_budget(fit: FitFn, params: Params, instructions: FitInstructions, client: ClientContext) -> FitResult:
    policy = client_privacy(client.task, instructions.client_id)
    if policy.budget is None:
        return fit(params, instructions)
    mechanism = mechanism_from_options(instructions.options)
    delta = policy.delta if policy.delta is not None else _number(instructions, "dp_delta")
    accountant = str(instructions.options.get("dp_accountant", "rdp"))
    stored = instructions.client_state.get(LEDGER_KEY)
    ledger = PrivacyLedger.from_params(stored) if stored is not None else PrivacyLedger()
    after = ledger.charged(mechanism, instructions.round)
    spent = after.epsilon(delta, accountant)
    if spent > policy.budget:
        raise BudgetExceeded(
            f"client {instructions.client_id} refuses round {instructions.round}: taking part would bring its "
            f"epsilon to {spent:.4g} (delta {delta:g}), past its limit {policy.budget:g}; "
            f"spent so far {ledger.epsilon(delta, accountant):.4g}"
        )
    result = fit(params, instructions)
    return dataclasses.replace(
        result, client_state=merged_state(instructions, result, **{LEDGER_KEY: after.to_params()})
    )


def _dp_clip(fit: FitFn, params: Params, instructions: FitInstructions, client: ClientContext) -> FitResult:
    clip = _number(instructions, CLIP_OPTION)
    result = fit(params, instructions)
    sent, norm = clip_sent(params, result.params, clip)
    metrics = dict(result.metrics)
    if instructions.options.get("dp_adaptive"):
        metrics[BELOW_CLIP_METRIC] = float(norm <= clip)
    return dataclasses.replace(result, params=sent, num_examples=1, metrics=metrics)


def _local_dp(fit: FitFn, params: Params, instructions: FitInstructions, client: ClientContext) -> FitResult:
    clip = _number(instructions, CLIP_OPTION)
    z = _number(instructions, "dp_noise_multiplier")
    noise = client_noise(instructions, client)
    result = fit(params, instructions)
    delta = Params({k: result.params[k].astype(np.float64) - params[k].astype(np.float64) for k in params})
    clipped, _ = clip_delta(delta, clip)
    sent = Params(
        {
            k: (params[k].astype(np.float64) + clipped[k] + noise.normal(params[k].shape, z * clip)).astype(
                params[k].dtype
            )
            for k in params
        }
    )
    # Nothing but the noised update leaves: no metrics, no extras, one example as its weight.
    return FitResult(sent, 1, {}, {}, result.client_state)


#: A data owner's own budget check (and ledger).
BUDGET_STEP = ClientStep("privacy_budget", _privacy_budget)
#: Clipping on the client for central DP.
DP_CLIP_STEP = ClientStep("dp_clip", _dp_clip)
#: Clipping and noise on the client: local DP.
LOCAL_DP_STEP = ClientStep("local_dp", _local_dp)
#: Every privacy client step.
PRIVACY_STEPS = (BUDGET_STEP, DP_CLIP_STEP, LOCAL_DP_STEP)


def privacy_client_steps(plan: PrivacyPlan) -> tuple[ClientStep, ...]:
    """The client steps ``plan`` needs, outermost first (its :attr:`~PrivacyPlan.client_step_names`)."""
    known = {step.name: step for step in PRIVACY_STEPS}
    return tuple(known[name] for name in plan.client_step_names)
