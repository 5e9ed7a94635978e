"""FedNova: normalised averaging, so clients that take more local steps do not dominate.

A client's delta after ``τ_i`` local SGD steps is about ``‖a_i‖₁`` gradients long (``τ_i``
for plain SGD; more with momentum). FedAvg's weighted mean then drifts towards the
objective of the clients that took the most steps. FedNova averages the *normalised*
deltas and rescales by an effective step count:

    Δ = τ_eff · Σ p_i Δ_i / ‖a_i‖₁        τ_eff = Σ p_i ‖a_i‖₁        p_i = n_i / Σ n_j

Each client reports ``‖a_i‖₁`` as metric ``fednova_norm`` through the ``fednova`` client
step (:mod:`sheaf.task.correction_steps`), from its ``steps`` and its momentum. With equal
step counts FedNova is FedAvg.

Example:
    >>> import numpy as np
    >>> from sheaf.core.params import Params
    >>> from sheaf.core.update import Update
    >>> from sheaf.strategies.base import RoundContext
    >>> p = Params({"w": np.zeros(1)})
    >>> ups = [Update(0, Params({"w": np.array([1.0])}), 1, {"fednova_norm": 1.0}),
    ...        Update(1, Params({"w": np.array([4.0])}), 1, {"fednova_norm": 4.0})]
    >>> new, _, _ = fednova().aggregate(ups, ((),), RoundContext(1, p, 0, 2))
    >>> new["w"].tolist()   # tau_eff 2.5 * (0.5 * 1/1 + 0.5 * 4/4)
    [2.5]

References:
    Wang, Liu, Liang, Joshi, Poor. Tackling the Objective Inconsistency Problem in
    Heterogeneous Federated Optimization. NeurIPS 2020.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from sheaf.core.params import Params
from sheaf.core.update import Update
from sheaf.strategies.base import AggregateStep, RoundContext, Strategy, WeightedSum, chain

__all__ = ["fednova", "normalized_mean"]


def normalized_mean() -> AggregateStep:
    """FedNova's aggregate: ``τ_eff · Σ p_i Δ_i / ‖a_i‖₁`` with ``‖a_i‖₁`` from metric ``fednova_norm``."""

    def apply(updates: Sequence[Update] | WeightedSum, state: tuple[()], ctx: RoundContext) -> tuple[Params, tuple[()]]:
        if isinstance(updates, WeightedSum):
            raise TypeError("FedNova needs each client's update and step count")
        chosen = sorted(
            (u for u in updates if u.num_examples > 0 and u.metrics["fednova_norm"] > 0), key=lambda u: u.client_id
        )
        weight = float(sum(u.num_examples for u in chosen))
        if not chosen:
            return ctx.params.zeros_like(), state
        tau_eff = sum(u.num_examples / weight * u.metrics["fednova_norm"] for u in chosen)
        totals = {name: np.zeros(array.shape, np.float64) for name, array in ctx.params.items()}
        for update in chosen:
            scale = update.num_examples / weight / update.metrics["fednova_norm"]
            for name, total in totals.items():
                total += scale * update.delta[name].astype(np.float64)
        return Params({name: (tau_eff * total).astype(ctx.params[name].dtype) for name, total in totals.items()}), state

    return AggregateStep(lambda params: (), apply, "normalized_mean", needs_updates=True)


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
    return chain(
        normalized_mean(),
        name="fednova",
        client_options={"client_steps": "fednova"},
        requires_metrics=("fednova_norm",),
    )
