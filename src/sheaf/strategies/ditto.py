"""Ditto: a global model learned by FedAvg, and a personal model per client pulled towards it.

Each client k keeps a personal model ``v_k`` beside the shared one. In a round it

1. trains the global params ``w`` as in FedAvg and sends that update (the global half);
2. trains its personal model with a proximal term towards the global params it received,
   ``min F_k(v) + (λ/2) ‖v − w‖²`` — that is, every local step is
   ``v ← v − η (∇F_k(v) + λ (v − w))`` — and keeps it (client state ``"ditto"``; the
   global params the first time). The personal model never leaves the client.

λ trades the two: λ → 0 gives purely local models, λ → ∞ the global one. The server half
is FedAvg's weighted mean, so Ditto is sum-only (secure aggregation can carry it) and
composes with differential privacy on the global update like FedAvg does. The model a
Ditto client uses is its personal one: personalised evaluation evaluates ``v_k`` (the
step's ``personalize``) beside the global model.

Both halves are in this module: :func:`ditto_client_step` (the client's) and
:func:`personal_models` (the server's, which changes nothing but names the client half and
sends λ). The personal training uses the task's own loop: the proximal strength travels as
``options["proximal_mu"]`` and its anchor as ``payload["proximal_anchor"]``
(:mod:`sheaf.task.client_steps`), which :class:`~sheaf.task.TorchTask` honours.

Example:
    >>> s = ditto(lam=0.5)
    >>> [step.name for step in s.client_steps], dict(s.client_options), s.needs_updates
    (['ditto'], {'ditto_lambda': 0.5, 'ditto_steps': 0}, False)

References:
    Li, Hu, Beirami, Smith. Ditto: Fair and Robust Federated Learning Through
    Personalization. ICML 2021, Algorithm 1.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from sheaf.core.params import Params
from sheaf.core.rng import Purpose
from sheaf.strategies._hyper import count, real
from sheaf.strategies.aggregate import weighted_mean
from sheaf.strategies.base import ClientHalf, EmptyState, ServerStep, Strategy, chain, client_side
from sheaf.task.base import FitInstructions, FitResult
from sheaf.task.client_steps import (
    LOCAL_STEPS,
    PROXIMAL_ANCHOR,
    ClientContext,
    ClientStep,
    FitFn,
    merged_state,
)

__all__ = ["DITTO_KEY", "DITTO_LAMBDA", "DITTO_STEPS", "ditto", "ditto_client_step", "personal_models"]

#: Client-state group holding the personal model ``v_k``.
DITTO_KEY = "ditto"
#: Option: the proximal strength λ of the personal objective.
DITTO_LAMBDA = "ditto_lambda"
#: Option: mini-batch steps of personal training (0: ``train.epochs`` epochs, like the global).
DITTO_STEPS = "ditto_steps"


def _personal_model(params: Params, instructions: FitInstructions, client: ClientContext) -> Params:
    """The client's personal model ``v_k`` (the global params until it has one)."""
    own = instructions.client_state.get(DITTO_KEY)
    if own is not None and params.same_structure(own):
        return own
    return params


def _ditto(fit: FitFn, params: Params, instructions: FitInstructions, client: ClientContext) -> FitResult:
    result = fit(params, instructions)  # the global half: sent, as in FedAvg
    lam = float(instructions.options.get(DITTO_LAMBDA, 0.0))
    steps = int(instructions.options.get(DITTO_STEPS, 0))
    options = {**instructions.options, "proximal_mu": lam}
    if steps > 0:
        options[LOCAL_STEPS] = steps
    else:
        options.pop(LOCAL_STEPS, None)
    # Its own stream, so the personal pass does not replay the global pass's shuffles.
    seed = int(np.random.SeedSequence([instructions.seed, int(Purpose.FIT), 1]).generate_state(1)[0])
    personal = dataclasses.replace(
        instructions, options=options, payload={**instructions.payload, PROXIMAL_ANCHOR: params}, seed=seed
    )
    trained = client.task.fit(_personal_model(params, instructions, client), client.data.train, personal)
    return dataclasses.replace(result, client_state=merged_state(instructions, result, **{DITTO_KEY: trained.params}))


def ditto_client_step() -> ClientStep:
    """Ditto's client half: train and send the global update, then train and keep ``v_k``.

    Its ``personalize`` gives the model the client itself uses: ``v_k``.
    """
    return ClientStep(DITTO_KEY, _ditto, personalize=_personal_model)


def personal_models(lam: float, steps: int = 0) -> ServerStep[EmptyState]:
    """Every client keeps a personal model pulled towards the global one with strength ``lam``;
    the server changes nothing.

    Raises:
        ConfigError: if lam is negative or steps is not a whole number >= 0.
    """
    strength = real("ditto", "lam", lam, low=0)
    personal_steps = count("ditto", "steps", steps)
    half = ClientHalf(steps=(ditto_client_step(),), options={DITTO_LAMBDA: strength, DITTO_STEPS: personal_steps})
    return client_side("personal_models", half)


def ditto(lam: float = 0.1, steps: int = 0) -> Strategy:
    """Ditto: FedAvg for the global model; each client also trains a personal model with a
    proximal pull ``(λ/2) ‖v − w‖²`` towards it, and uses that one.

    Args:
        lam: λ >= 0, how strongly personal models are pulled towards the global model (the
            paper tunes it in {0.01, 0.1, 1, 2}).
        steps: mini-batch steps of personal training per round; 0 trains ``train.epochs``
            epochs, as the global update does.

    Raises:
        ConfigError: if a hyperparameter is out of range.

    Example:
        >>> import numpy as np
        >>> from sheaf.core.params import Params
        >>> from sheaf.core.update import Update
        >>> from sheaf.strategies.base import RoundContext
        >>> p = Params({"w": np.zeros(1)})
        >>> s = ditto()
        >>> ups = [Update(i, Params({"w": np.array([v])}), 1) for i, v in enumerate([1.0, 3.0])]
        >>> s.aggregate(ups, s.init(p), RoundContext(1, p, 0, len(ups)))[0]["w"].tolist()   # FedAvg on the global half
        [2.0]

    References:
        Li, Hu, Beirami, Smith. Ditto: Fair and Robust Federated Learning Through
        Personalization. ICML 2021.
    """
    return chain(weighted_mean(), personal_models(lam, steps), name="ditto")
