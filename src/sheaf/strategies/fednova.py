"""FedNova: normalised averaging, so clients that take more local steps do not dominate.

A client's delta after ``τ_i`` local SGD steps is about ``‖a_i‖₁`` gradients long (``τ_i``
for plain SGD; more with momentum). FedAvg's weighted mean then drifts towards the
objective of the clients that took the most steps. FedNova averages the *normalised*
deltas and rescales by an effective step count:

    Δ = τ_eff · Σ p_i Δ_i / ‖a_i‖₁        τ_eff = Σ p_i ‖a_i‖₁        p_i = n_i / Σ n_j

Each client reports ``‖a_i‖₁`` as metric ``fednova_norm`` through the ``fednova`` client
step (:func:`fednova_client_step`, beside the server half here), from its ``steps`` and
its momentum. With equal step counts FedNova is FedAvg. A real client's ``‖a_i‖₁`` is at
least 1 (one local step), so a report outside ``[1, 1e9]`` is refused before aggregation:
a client claiming ``5e-324`` would otherwise multiply its delta without bound.

Example:
    >>> import numpy as np
    >>> from sheaf.core.params import Params
    >>> from sheaf.core.update import Update
    >>> from sheaf.strategies.base import RoundContext
    >>> p = Params({"w": np.zeros(1)})
    >>> ups = [Update(0, Params({"w": np.array([1.0])}), 1, {"fednova_norm": 1.0}),
    ...        Update(1, Params({"w": np.array([4.0])}), 1, {"fednova_norm": 4.0})]
    >>> strategy = fednova()
    >>> new, _, _ = strategy.aggregate(ups, strategy.init(p), RoundContext(1, p, 0, 2))
    >>> new["w"].tolist()   # tau_eff 2.5 * (0.5 * 1/1 + 0.5 * 4/4)
    [2.5]

References:
    Wang, Liu, Liang, Joshi, Poor. Tackling the Objective Inconsistency Problem in
    Heterogeneous Federated Optimization. NeurIPS 2020.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np

from sheaf.core.acceptance import MetricRange
from sheaf.core.config import TrainConfig
from sheaf.core.params import Params
from sheaf.core.update import Update
from sheaf.strategies.base import (
    AggregateStep,
    ClientHalf,
    EmptyState,
    RoundContext,
    Strategy,
    WeightedSum,
    chain,
    init_empty,
)
from sheaf.strategies.local_sgd import effective_lr, reported_steps
from sheaf.task.base import FitInstructions, FitResult
from sheaf.task.client_steps import ClientContext, ClientStep, FitFn

__all__ = ["FEDNOVA_NORM", "fednova", "fednova_client_step", "fednova_norm", "normalized_mean"]

#: The metric carrying a client's ‖a_i‖₁, and the values a real client can report.
FEDNOVA_NORM = MetricRange("fednova_norm", 1.0, 1e9)


def fednova_norm(steps: float, train: TrainConfig) -> float:
    """‖a_i‖₁ of Wang et al. for ``steps`` local SGD steps with the configured momentum.

    ``K`` for plain SGD, ``[K − ρ(1 − ρᴷ)/(1 − ρ)] / (1 − ρ)`` with momentum ρ.

    Raises:
        TaskError: if the client optimiser is not SGD.

    Example:
        >>> round(fednova_norm(steps=4, train=TrainConfig(momentum=0.0)), 3)
        4.0
        >>> round(fednova_norm(steps=4, train=TrainConfig(momentum=0.5)), 3)   # (4 - 0.5 * 0.9375 / 0.5) / 0.5
        6.125
    """
    effective_lr(train, "FedNova")
    rho = train.momentum
    if rho == 0:
        return float(steps)
    return (steps - rho * (1 - math.pow(rho, steps)) / (1 - rho)) / (1 - rho)


def _fednova(fit: FitFn, params: Params, instructions: FitInstructions, client: ClientContext) -> FitResult:
    effective_lr(instructions.train, "FedNova")
    result = fit(params, instructions)
    norm = fednova_norm(reported_steps(result, "FedNova"), instructions.train)
    return dataclasses.replace(result, metrics={**result.metrics, FEDNOVA_NORM.name: norm})


def fednova_client_step() -> ClientStep:
    """FedNova's client half: report ``fednova_norm`` = ‖a_i‖₁ from its local step count."""
    return ClientStep("fednova", _fednova)


def normalized_mean() -> AggregateStep[EmptyState]:
    """FedNova's aggregate: ``τ_eff · Σ p_i Δ_i / ‖a_i‖₁`` with ``‖a_i‖₁`` from metric ``fednova_norm``."""

    def apply(
        updates: Sequence[Update] | WeightedSum, state: EmptyState, ctx: RoundContext
    ) -> tuple[Params, EmptyState]:
        if isinstance(updates, WeightedSum):
            raise TypeError("FedNova needs each client's update and step count")
        chosen = sorted(
            (u for u in updates if u.num_examples > 0 and u.metrics[FEDNOVA_NORM.name] > 0), key=lambda u: u.client_id
        )
        weight = float(sum(u.num_examples for u in chosen))
        if not chosen:
            return ctx.params.zeros_like(), state
        tau_eff = sum(u.num_examples / weight * u.metrics[FEDNOVA_NORM.name] for u in chosen)
        totals = {name: np.zeros(array.shape, np.float64) for name, array in ctx.params.items()}
        for update in chosen:
            scale = update.num_examples / weight / update.metrics[FEDNOVA_NORM.name]
            for name, total in totals.items():
                total += scale * update.delta[name].astype(np.float64)
        return Params({name: (tau_eff * total).astype(ctx.params[name].dtype) for name, total in totals.items()}), state

    return AggregateStep(
        init_empty,
        apply,
        "normalized_mean",
        needs_updates=True,
        client=ClientHalf(steps=(fednova_client_step(),), metrics=(FEDNOVA_NORM,)),
    )


def fednova() -> Strategy:
    """FedNova: normalised averaging of updates from clients with different numbers of local steps.

    Clients must train with local SGD (with or without momentum) and report their
    ``steps``; TorchTask's standard loop does.

    Example:
        >>> import numpy as np
        >>> from sheaf.core.params import Params
        >>> from sheaf.core.update import Update
        >>> from sheaf.strategies.base import RoundContext
        >>> p = Params({"w": np.zeros(1)})
        >>> s = fednova()
        >>> ups = [Update(i, Params({"w": np.array([v])}), 1, {"fednova_norm": 1.0 + 3 * (v > 1)}) for i, v in enumerate([1.0, 4.0])]
        >>> s.aggregate(ups, s.init(p), RoundContext(1, p, 0, len(ups)))[0]["w"].round(4).tolist()
        [2.5]

    References:
        Wang, Liu, Liang, Joshi, Poor. Tackling the Objective Inconsistency Problem in
        Heterogeneous Federated Optimization. NeurIPS 2020.
    """
    return chain(normalized_mean(), name="fednova")
