"""SCAFFOLD: control variates that correct client drift (Karimireddy et al. 2020, option II).

The server keeps a control variate ``c`` (strategy state), sent to every client as payload
``"scaffold"``. Each client keeps its own ``c_i`` (client state, zero at first), corrects
every local gradient by ``c − c_i``, and after ``K`` local steps of size ``η`` sets
``c_i⁺ = c_i − c + (x − y_i) / (K η)`` (option II); it sends its delta ``Δy_i = y_i − x`` and,
in the extras ``"scaffold"``, ``Δc_i = c_i⁺ − c_i``. The client half is the ``scaffold``
client step (:func:`scaffold_client_step`, in this module beside the server half), run by
``fit_client`` wherever the client runs. The server averages uniformly over the ``|S|`` clients that trained:

    x ← x + η_g · (1/|S|) Σ Δy_i          c ← c + (1/N) Σ Δc_i     (N: all clients)

SCAFFOLD sums only, but sheaf's :class:`~sheaf.strategies.base.WeightedSum` carries the
example-weighted sum of deltas and no extras, so the step is marked as needing each update.

Example:
    >>> import numpy as np
    >>> from sheaf.core.params import Params
    >>> from sheaf.core.update import Update
    >>> from sheaf.strategies.base import RoundContext
    >>> s = scaffold()
    >>> p = Params({"w": np.zeros(1)})
    >>> ups = [Update(i, Params({"w": np.array([v])}), 5, {}, {"scaffold": Params({"w": np.array([2 * v])})})
    ...        for i, v in enumerate([1.0, 3.0])]
    >>> new, state, _ = s.aggregate(ups, s.init(p), RoundContext(1, p, 0, population=4))
    >>> new["w"].tolist()   # the mean delta
    [2.0]
    >>> s.configure(state, RoundContext(2, new, 0, 4)).payload["scaffold"]["w"].tolist()   # c = (2 + 6) / 4
    [2.0]

References:
    Karimireddy, Kale, Mohri, Reddi, Stich, Suresh. SCAFFOLD: Stochastic Controlled Averaging
    for Federated Learning. ICML 2020, Algorithm 1.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from sheaf.core.errors import TaskError
from sheaf.core.params import Params
from sheaf.core.update import Update
from sheaf.strategies._hyper import real
from sheaf.strategies.base import (
    AggregateStep,
    Broadcast,
    ClientHalf,
    EmptyState,
    RoundContext,
    ServerStep,
    Strategy,
    WeightedSum,
    chain,
    init_empty,
)
from sheaf.strategies.local_sgd import effective_lr, reported_steps
from sheaf.task.base import FitInstructions, FitResult
from sheaf.task.client_steps import GRADIENT_CORRECTION, ClientContext, ClientStep, FitFn, merged_state

__all__ = ["SCAFFOLD_KEY", "ScaffoldState", "scaffold", "scaffold_aggregate", "scaffold_client_step", "server_scale"]

#: Payload group (server ``c``), client-state group (``c_i``) and extras group (``Δc_i``).
SCAFFOLD_KEY = "scaffold"


class ScaffoldState(NamedTuple):
    """SCAFFOLD's server state: the control variate ``c``, shaped like the model."""

    control: Params


def _mean(groups: list[Params], like: Params) -> Params:
    """The uniform mean of tensor groups, summed in the given (client-id) order in float64."""
    totals = {name: np.zeros(array.shape, np.float64) for name, array in like.items()}
    for group in groups:
        for name, total in totals.items():
            total += group[name].astype(np.float64)
    return Params({name: (total / len(groups)).astype(like[name].dtype) for name, total in totals.items()})


# Client half ----------------------------------------------------------------------------


def _scaffold(fit: FitFn, params: Params, instructions: FitInstructions, client: ClientContext) -> FitResult:
    server = instructions.payload.get(SCAFFOLD_KEY)
    if server is None or not params.same_structure(server):
        raise TaskError("SCAFFOLD needs the server control variate (payload 'scaffold') shaped like the model")
    own = instructions.client_state.get(SCAFFOLD_KEY)
    if own is None or not params.same_structure(own):
        own = params.zeros_like()
    lr = effective_lr(instructions.train, "SCAFFOLD")
    payload = {**instructions.payload, GRADIENT_CORRECTION: server - own}
    result = fit(params, dataclasses.replace(instructions, payload=payload))
    steps = reported_steps(result, "SCAFFOLD")
    if steps > 0:
        # Option II: c_i+ = c_i - c + (x - y) / (K lr)
        updated = own - server + (params - result.params) * (1.0 / (steps * lr))
    else:
        updated = own
    return dataclasses.replace(
        result,
        extras={**result.extras, SCAFFOLD_KEY: updated - own},
        client_state=merged_state(instructions, result, **{SCAFFOLD_KEY: updated}),
    )


def scaffold_client_step() -> ClientStep:
    """SCAFFOLD's client half: correct every local gradient by ``c − c_i``, then move ``c_i``.

    Reads the server control variate ``c`` (payload ``"scaffold"``) and its own ``c_i``
    (client state ``"scaffold"``, zero at first), has every local gradient corrected by
    ``c − c_i`` (payload ``"gradient_correction"``), then computes option II's
    ``c_i⁺ = c_i − c + (x − y) / (K η)`` from its ``K`` local steps (metric ``"steps"``);
    keeps ``c_i⁺`` as its state and sends ``c_i⁺ − c_i`` in the extras ``"scaffold"``.
    """
    return ClientStep(SCAFFOLD_KEY, _scaffold)


# Server half ----------------------------------------------------------------------------


def _send_control(state: ScaffoldState, ctx: RoundContext) -> Broadcast:
    return Broadcast({}, {SCAFFOLD_KEY: state.control})


def scaffold_aggregate() -> AggregateStep[ScaffoldState]:
    """The uniform mean of the deltas; moves ``c`` by the control-variate deltas over all clients.

    Its client half is :func:`scaffold_client_step`; every round it sends the clients ``c``
    from its own state, and it reads each update's extras ``"scaffold"``.
    """

    def init(params: Params) -> ScaffoldState:
        return ScaffoldState(params.zeros_like())

    def apply(
        updates: Sequence[Update] | WeightedSum, state: ScaffoldState, ctx: RoundContext
    ) -> tuple[Params, ScaffoldState]:
        if isinstance(updates, WeightedSum):
            raise TypeError("SCAFFOLD needs each client's update and control-variate delta")
        chosen = sorted((u for u in updates if u.num_examples > 0), key=lambda u: u.client_id)
        if not chosen:
            return ctx.params.zeros_like(), state
        delta = _mean([u.delta for u in chosen], ctx.params)
        # c <- c + (|S| / N) * mean(dc_i) = c + sum(dc_i) / N
        shift = _mean([u.extras[SCAFFOLD_KEY] for u in chosen], state.control) * (len(chosen) / max(ctx.population, 1))
        return delta, ScaffoldState(state.control + shift)

    return AggregateStep(
        init,
        apply,
        "scaffold_mean",
        needs_updates=True,
        client=ClientHalf(steps=(scaffold_client_step(),), extras=(SCAFFOLD_KEY,)),
        configure=_send_control,
    )


def server_scale(lr: float) -> ServerStep[EmptyState]:
    """Scale the aggregated delta by a global learning rate η_g."""

    def apply(delta: Params, state: EmptyState, ctx: RoundContext) -> tuple[Params, EmptyState]:
        return (delta if lr == 1.0 else delta * lr), state

    return ServerStep(init_empty, apply, "server_scale")


def scaffold(lr: float = 1.0) -> Strategy:
    """SCAFFOLD with option II control variates and a global learning rate.

    Clients must train with local SGD (momentum allowed: the step size in option II is
    then ``η / (1 − momentum)``) and report their ``steps``; TorchTask's standard loop does.

    Args:
        lr: global (server) learning rate η_g > 0; 1 (the paper's usual choice) applies
            the mean delta as is.

    Raises:
        ConfigError: if lr is not > 0.

    Example:
        >>> s = scaffold()
        >>> [step.name for step in s.client_steps], s.update_rule.extras, s.needs_updates
        (['scaffold'], ('scaffold',), True)

    References:
        Karimireddy, Kale, Mohri, Reddi, Stich, Suresh. SCAFFOLD: Stochastic Controlled
        Averaging for Federated Learning. ICML 2020.
    """
    eta = real("scaffold", "lr", lr, low=0, low_open=True)
    return chain(scaffold_aggregate(), server_scale(eta), name="scaffold")
