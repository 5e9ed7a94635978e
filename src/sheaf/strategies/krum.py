"""Krum, Multi-Krum and Bulyan: keep the updates that sit closest to their neighbours.

**Krum** (Blanchard et al. 2017) scores each update by the sum of squared distances to its
``n − f − 2`` nearest other updates and picks the lowest score; it assumes
``n >= 2f + 3``. **Multi-Krum** averages the ``m`` best-scored updates, uniformly as in the
paper. **Bulyan** (El Mhamdi et al. 2018) picks ``θ = n − 2f`` updates by applying Krum
repeatedly to those not yet picked, then, per coordinate, averages the ``β = θ − 2f``
values closest to the median of the picked ones; it assumes ``n >= 4f + 3``.

Updates from clients with zero examples are left out; the rest are taken in client-id
order and ties are broken by the lower client id, so the result does not depend on the
order updates arrived in. Flower's Multi-Krum averages the kept updates weighted by their
number of examples; sheaf follows the paper (uniform), because a poisoned client can claim
any number of examples.

Example:
    >>> import numpy as np
    >>> from sheaf.core.params import Params
    >>> from sheaf.core.update import Update
    >>> from sheaf.strategies.base import RoundContext
    >>> p = Params({"w": np.zeros(1)})
    >>> ups = [Update(i, Params({"w": np.array([v])}), 1) for i, v in enumerate([0.0, 1.0, 2.0, 3.0, 50.0])]
    >>> step = krum_aggregate(f=1)
    >>> step.apply(ups, (), RoundContext(1, p, 0, 5))[0]["w"].tolist()
    [1.0]

References:
    Blanchard, El Mhamdi, Guerraoui, Stainer. Machine Learning with Adversaries: Byzantine
    Tolerant Gradient Descent. NeurIPS 2017. El Mhamdi, Guerraoui, Rouault. The Hidden
    Vulnerability of Distributed Learning in Byzantium. ICML 2018.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from sheaf.core.params import Params
from sheaf.core.update import Update
from sheaf.strategies._hyper import count
from sheaf.strategies.base import AggregateStep, EmptyState, RoundContext, Strategy, WeightedSum, chain, init_empty
from sheaf.strategies.robust import stack_updates

__all__ = ["bulyan", "bulyan_aggregate", "krum", "krum_aggregate", "krum_scores", "multikrum"]

F64 = npt.NDArray[np.float64]


def _squared_distances(matrix: F64) -> F64:
    """Pairwise squared Euclidean distances, from row differences (exact, symmetric)."""
    n = len(matrix)
    out = np.zeros((n, n))
    for i in range(n):
        diff = matrix[i + 1 :] - matrix[i]
        out[i, i + 1 :] = out[i + 1 :, i] = np.einsum("ij,ij->i", diff, diff)
    return out


def krum_scores(distances: F64, f: int) -> F64:
    """Krum's score of each row: the sum of its ``n − f − 2`` smallest distances to the others.

    Where fewer than one neighbour would count (Bulyan's last picks), the nearest one does.
    """
    n = len(distances)
    if n == 1:
        return np.zeros(1)
    neighbours = max(1, n - f - 2)
    others = np.sort(distances + np.diag(np.full(n, np.inf)), axis=1)[:, :neighbours]
    scores: F64 = others.sum(axis=1)
    return scores


def _best(scores: F64, m: int) -> list[int]:
    # A stable sort: equal scores keep the client-id order of the rows.
    return [int(i) for i in np.argsort(scores, kind="stable")[:m]]


def krum_aggregate(f: int, m: int = 1) -> AggregateStep[EmptyState]:
    """Krum (``m = 1``) or Multi-Krum (the uniform mean of the ``m`` best-scored updates).

    Args:
        f: the number of attackers per round tolerated; needs ``n >= 2f + 3`` updates.
        m: updates to keep; 0 keeps ``n − f``. At most ``n`` are kept.

    References:
        Blanchard et al. Machine Learning with Adversaries: Byzantine Tolerant Gradient
        Descent. NeurIPS 2017.
    """

    def apply(
        updates: Sequence[Update] | WeightedSum, state: EmptyState, ctx: RoundContext
    ) -> tuple[Params, EmptyState]:
        _, matrix = stack_updates(updates, ctx.params)
        keep = min(len(matrix), m if m > 0 else len(matrix) - f)
        chosen = _best(krum_scores(_squared_distances(matrix), f), keep)
        return ctx.params.unflatten(matrix[chosen].mean(axis=0)), state

    label = "Krum" if m == 1 else "Multi-Krum"
    return AggregateStep(
        init_empty,
        apply,
        "krum" if m == 1 else "multikrum",
        needs_updates=True,
        min_updates=2 * f + 3,
        assumption=f"{label} with f={f} assumes n >= 2f + 3 = {2 * f + 3} updates",
    )


def bulyan_aggregate(f: int) -> AggregateStep[EmptyState]:
    """Bulyan over Krum: pick ``n − 2f`` updates by repeated Krum, then a trimmed mean around the median.

    Args:
        f: the number of attackers per round tolerated; needs ``n >= 4f + 3`` updates.

    References:
        El Mhamdi, Guerraoui, Rouault. The Hidden Vulnerability of Distributed Learning in
        Byzantium. ICML 2018.
    """

    def apply(
        updates: Sequence[Update] | WeightedSum, state: EmptyState, ctx: RoundContext
    ) -> tuple[Params, EmptyState]:
        _, matrix = stack_updates(updates, ctx.params)
        n = len(matrix)
        theta, beta = n - 2 * f, n - 4 * f
        distances = _squared_distances(matrix)
        remaining = list(range(n))
        picked: list[int] = []
        for _ in range(theta):
            sub = distances[np.ix_(remaining, remaining)]
            best = _best(krum_scores(sub, f), 1)[0]
            picked.append(remaining.pop(best))
        selected = matrix[sorted(picked)]
        middle = np.median(selected, axis=0)
        # Per coordinate, the beta values nearest the median (ties: the lower client id).
        order = np.argsort(np.abs(selected - middle), axis=0, kind="stable")[:beta]
        nearest = np.take_along_axis(selected, order, axis=0)
        return ctx.params.unflatten(nearest.mean(axis=0)), state

    return AggregateStep(
        init_empty,
        apply,
        "bulyan",
        needs_updates=True,
        min_updates=4 * f + 3,
        assumption=f"Bulyan with f={f} assumes n >= 4f + 3 = {4 * f + 3} updates",
    )


def krum(f: int = 1) -> Strategy:
    """Krum: the one update closest to its ``n − f − 2`` nearest neighbours.

    Args:
        f: attackers per round to tolerate; a round needs ``n >= 2f + 3`` updates.

    Raises:
        ConfigError: if f is not a whole number >= 0.

    Example:
        >>> import numpy as np
        >>> from sheaf.core.params import Params
        >>> from sheaf.core.update import Update
        >>> from sheaf.strategies.base import RoundContext
        >>> p = Params({"w": np.zeros(1)})
        >>> s = krum(f=1)
        >>> ups = [Update(i, Params({"w": np.array([v])}), 1) for i, v in enumerate([0.0, 1.0, 2.0, 3.0, 50.0])]
        >>> s.aggregate(ups, s.init(p), RoundContext(1, p, 0, len(ups)))[0]["w"].round(4).tolist()
        [1.0]

    References:
        Blanchard, El Mhamdi, Guerraoui, Stainer. Machine Learning with Adversaries:
        Byzantine Tolerant Gradient Descent. NeurIPS 2017.
    """
    return chain(krum_aggregate(count("krum", "f", f)), name="krum")


def multikrum(f: int = 1, m: int = 0) -> Strategy:
    """Multi-Krum: the uniform mean of the ``m`` updates with the best Krum scores.

    Args:
        f: attackers per round to tolerate; a round needs ``n >= 2f + 3`` updates.
        m: how many updates to average; 0 (the default) takes ``n − f``.

    Raises:
        ConfigError: if f or m is not a whole number >= 0.

    Example:
        >>> import numpy as np
        >>> from sheaf.core.params import Params
        >>> from sheaf.core.update import Update
        >>> from sheaf.strategies.base import RoundContext
        >>> p = Params({"w": np.zeros(1)})
        >>> s = multikrum(f=1)   # keeps n - f = 4
        >>> ups = [Update(i, Params({"w": np.array([v])}), 1) for i, v in enumerate([0.0, 1.0, 2.0, 3.0, 50.0])]
        >>> s.aggregate(ups, s.init(p), RoundContext(1, p, 0, len(ups)))[0]["w"].round(4).tolist()
        [1.5]

    References:
        Blanchard, El Mhamdi, Guerraoui, Stainer. Machine Learning with Adversaries:
        Byzantine Tolerant Gradient Descent. NeurIPS 2017.
    """
    return chain(krum_aggregate(count("multikrum", "f", f), count("multikrum", "m", m)), name="multikrum")


def bulyan(f: int = 1) -> Strategy:
    """Bulyan: repeated Krum selection, then a coordinate-wise trimmed mean around the median.

    Args:
        f: attackers per round to tolerate; a round needs ``n >= 4f + 3`` updates.

    Raises:
        ConfigError: if f is not a whole number >= 0.

    Example:
        >>> import numpy as np
        >>> from sheaf.core.params import Params
        >>> from sheaf.core.update import Update
        >>> from sheaf.strategies.base import RoundContext
        >>> p = Params({"w": np.zeros(1)})
        >>> s = bulyan(f=1)
        >>> ups = [Update(i, Params({"w": np.array([v])}), 1) for i, v in enumerate([0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 100.0])]
        >>> s.aggregate(ups, s.init(p), RoundContext(1, p, 0, len(ups)))[0]["w"].round(4).tolist()
        [2.0]

    References:
        El Mhamdi, Guerraoui, Rouault. The Hidden Vulnerability of Distributed Learning in
        Byzantium. ICML 2018.
    """
    return chain(bulyan_aggregate(count("bulyan", "f", f)), name="bulyan")
