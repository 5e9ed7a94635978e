"""Coordinate-wise robust aggregation: the median and the trimmed mean of the updates.

Both look at each coordinate of the clients' deltas separately and ignore the number of
examples (a poisoned client could lie about it). Clients with zero examples did not train
and are left out. Values are stacked in client-id order in float64, so the result does
not depend on the order updates arrived in; it is cast back to each parameter's dtype.

Example:
    >>> import numpy as np
    >>> from sheaf.core.params import Params
    >>> from sheaf.core.update import Update
    >>> from sheaf.strategies.base import RoundContext
    >>> p = Params({"w": np.zeros(2)})
    >>> ups = [Update(i, Params({"w": np.array([v, -v])}), 1) for i, v in enumerate([1.0, 2.0, 3.0, 100.0])]
    >>> step = coordinate_median()
    >>> step.apply(ups, (), RoundContext(1, p, 0, 4))[0]["w"].tolist()
    [2.5, -2.5]
    >>> step = coordinate_trimmed_mean(beta=0.25)
    >>> step.apply(ups, (), RoundContext(1, p, 0, 4))[0]["w"].tolist()
    [2.5, -2.5]

References:
    Yin, Chen, Ramchandran, Bartlett. Byzantine-Robust Distributed Learning: Towards
    Optimal Statistical Rates. ICML 2018.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from sheaf.core.params import Params
from sheaf.core.update import Update
from sheaf.strategies._hyper import count, real
from sheaf.strategies.base import AggregateStep, EmptyState, RoundContext, Strategy, WeightedSum, chain, init_empty

__all__ = ["coordinate_median", "coordinate_trimmed_mean", "median", "stack_updates", "trimmed_mean"]


def stack_updates(updates: Sequence[Update] | WeightedSum, like: Params) -> tuple[list[int], npt.NDArray[np.float64]]:
    """The deltas of clients with examples as rows of one float64 matrix, in client-id order.

    Returns:
        The client ids, and an ``(n, num_elements)`` matrix of their flattened deltas.

    Raises:
        TypeError: if given a weighted sum (robust aggregators need each update).
    """
    if isinstance(updates, WeightedSum):
        raise TypeError("robust aggregation needs each client's update, not their sum")
    chosen = sorted((u for u in updates if u.num_examples > 0), key=lambda u: u.client_id)
    matrix = np.empty((len(chosen), like.num_elements), np.float64)
    for row, update in enumerate(chosen):
        matrix[row] = Params({name: update.delta[name] for name in like}).flatten()
    return [u.client_id for u in chosen], matrix


def trimmed_count(beta: float, n: int) -> int:
    """How many values the trimmed mean drops from each end: ``floor(beta * n)``."""
    return math.floor(beta * n + 1e-9)


def coordinate_median(f: int = 0) -> AggregateStep[EmptyState]:
    """The coordinate-wise median of the deltas (the mean of the two middle values for even n).

    Args:
        f: the number of attackers per round the run must tolerate; the median does so
            while ``n >= 2f + 1`` (it does not otherwise use f).

    References:
        Yin et al. Byzantine-Robust Distributed Learning. ICML 2018.
    """

    def apply(
        updates: Sequence[Update] | WeightedSum, state: EmptyState, ctx: RoundContext
    ) -> tuple[Params, EmptyState]:
        _, matrix = stack_updates(updates, ctx.params)
        if len(matrix) == 0:
            return ctx.params.zeros_like(), state
        return ctx.params.unflatten(np.median(matrix, axis=0)), state

    return AggregateStep(
        init_empty,
        apply,
        "coordinate_median",
        needs_updates=True,
        min_updates=2 * f + 1,
        assumption=f"the median with f={f} assumes n >= 2f + 1 = {2 * f + 1} updates",
    )


def coordinate_trimmed_mean(beta: float) -> AggregateStep[EmptyState]:
    """Per coordinate, drop the ``floor(beta · n)`` largest and smallest values and average the rest.

    Args:
        beta: the share trimmed from each end, in (0, 0.5); it tolerates up to
            ``floor(beta · n)`` attackers per round.

    References:
        Yin et al. Byzantine-Robust Distributed Learning. ICML 2018.
    """
    least = next(n for n in range(1, 10**6) if trimmed_count(beta, n) >= 1)

    def apply(
        updates: Sequence[Update] | WeightedSum, state: EmptyState, ctx: RoundContext
    ) -> tuple[Params, EmptyState]:
        _, matrix = stack_updates(updates, ctx.params)
        k = trimmed_count(beta, len(matrix))
        kept = np.sort(matrix, axis=0)[k : len(matrix) - k]
        return ctx.params.unflatten(kept.mean(axis=0)), state

    return AggregateStep(
        init_empty,
        apply,
        "coordinate_trimmed_mean",
        needs_updates=True,
        min_updates=least,
        assumption=(
            f"the trimmed mean with beta={beta:g} drops floor(beta * n) updates per side and needs "
            f"n >= {least} updates to drop any"
        ),
    )


def median(f: int = 0) -> Strategy:
    """Coordinate-wise median of the clients' updates (FedMedian).

    Args:
        f: attackers per round to tolerate; checked against the cohort (n >= 2f + 1).

    Raises:
        ConfigError: if f is not a whole number >= 0.

    Example:
        >>> import numpy as np
        >>> from sheaf.core.params import Params
        >>> from sheaf.core.update import Update
        >>> from sheaf.strategies.base import RoundContext
        >>> p = Params({"w": np.zeros(1)})
        >>> s = median(f=1)
        >>> ups = [Update(i, Params({"w": np.array([v])}), 1) for i, v in enumerate([1.0, 2.0, 90.0])]
        >>> s.aggregate(ups, s.init(p), RoundContext(1, p, 0, len(ups)))[0]["w"].round(4).tolist()
        [2.0]

    References:
        Yin, Chen, Ramchandran, Bartlett. Byzantine-Robust Distributed Learning: Towards
        Optimal Statistical Rates. ICML 2018.
    """
    return chain(coordinate_median(count("median", "f", f)), name="median")


def trimmed_mean(beta: float = 0.2) -> Strategy:
    """Coordinate-wise beta-trimmed mean of the clients' updates.

    Args:
        beta: share of values trimmed from each end of every coordinate, in (0, 0.5).

    Raises:
        ConfigError: if beta is outside (0, 0.5).

    Example:
        >>> import numpy as np
        >>> from sheaf.core.params import Params
        >>> from sheaf.core.update import Update
        >>> from sheaf.strategies.base import RoundContext
        >>> p = Params({"w": np.zeros(1)})
        >>> s = trimmed_mean(beta=0.2)
        >>> ups = [Update(i, Params({"w": np.array([v])}), 1) for i, v in enumerate([-90.0, 1.0, 2.0, 3.0, 90.0])]
        >>> s.aggregate(ups, s.init(p), RoundContext(1, p, 0, len(ups)))[0]["w"].round(4).tolist()
        [2.0]

    References:
        Yin, Chen, Ramchandran, Bartlett. Byzantine-Robust Distributed Learning: Towards
        Optimal Statistical Rates. ICML 2018.
    """
    share = real("trimmed_mean", "beta", beta, low=0, high=0.5, low_open=True, high_open=True)
    return chain(coordinate_trimmed_mean(share), name="trimmed_mean")
