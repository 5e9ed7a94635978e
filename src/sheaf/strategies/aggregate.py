"""Aggregate steps that need only the weighted sum of the updates.

Example:
    >>> import numpy as np
    >>> from sheaf.core.params import Params
    >>> from sheaf.core.update import Update
    >>> from sheaf.strategies.base import RoundContext
    >>> p = Params({"w": np.zeros(1, np.float32)})
    >>> step = weighted_mean()
    >>> ups = [Update(0, Params({"w": np.array([2.], np.float32)}), 3),
    ...        Update(1, Params({"w": np.array([6.], np.float32)}), 1)]
    >>> delta, _ = step.apply(ups, step.init(p), RoundContext(1, p, 0, 2))
    >>> delta["w"].tolist()
    [3.0]
"""

from __future__ import annotations

from collections.abc import Sequence

from sheaf.core.params import Params
from sheaf.core.update import Update
from sheaf.strategies.base import AggregateStep, EmptyState, RoundContext, WeightedSum, init_empty, sum_updates

__all__ = ["weighted_mean"]


def weighted_mean() -> AggregateStep[EmptyState]:
    """The mean of the deltas weighted by each client's number of examples (FedAvg).

    Clients with zero examples carry no weight; a round whose clients all have zero
    examples leaves the model unchanged. The sum is exact (independent of order and
    grouping), rounded to float64 once and cast back to each parameter's dtype.

    References:
        McMahan et al. Communication-Efficient Learning of Deep Networks from
        Decentralized Data. AISTATS 2017.
    """

    def apply(
        updates: Sequence[Update] | WeightedSum, state: EmptyState, ctx: RoundContext
    ) -> tuple[Params, EmptyState]:
        summed = updates if isinstance(updates, WeightedSum) else sum_updates(updates, ctx.params)
        if summed.weight <= 0:
            return ctx.params.zeros_like(), state
        mean = {name: (total / summed.weight).astype(ctx.params[name].dtype) for name, total in summed.total.items()}
        return Params(mean), state

    return AggregateStep(init_empty, apply, "weighted_mean", needs_updates=False, weighted_mean=True)
