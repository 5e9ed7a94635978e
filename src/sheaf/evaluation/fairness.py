"""Fairness of a metric across clients: spread, worst client, worst 10%, Jain's index.

Example:
    >>> s = summarize([0.5, 0.9, 1.0, 0.6], weights=[10, 30, 30, 30])
    >>> round(s.mean, 3), round(s.weighted_mean, 3), s.min, s.p10, round(s.jain, 3)
    (0.75, 0.8, 0.5, 0.5, 0.93)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

__all__ = ["FairnessSummary", "jain_index", "summarize", "worst_fraction_mean"]


@dataclass(frozen=True)
class FairnessSummary:
    """A metric's distribution over clients.

    Attributes:
        clients: how many clients had a value.
        mean: unweighted mean over clients.
        weighted_mean: mean weighted by each client's number of examples.
        std: population standard deviation over clients.
        min: the worst client's value.
        max: the best client's value.
        p10: mean of the worst 10% of clients (at least one client).
        jain: Jain's fairness index, in (0, 1]; 1 means every client scored the same.
    """

    clients: int
    mean: float
    weighted_mean: float
    std: float
    min: float
    max: float
    p10: float
    jain: float

    def as_dict(self) -> dict[str, float]:
        """The summary as a plain dict."""
        return {k: float(v) for k, v in asdict(self).items()}


def jain_index(values: Sequence[float]) -> float:
    """Jain's fairness index ``(sum x)^2 / (n * sum x^2)`` of non-negative values.

    Returns 1.0 when every value is zero (all clients are equally served).

    References:
        Jain, Chiu, Hawe. A Quantitative Measure of Fairness and Discrimination for
        Resource Allocation in Shared Computer Systems. DEC-TR-301, 1984.
    """
    x = np.asarray(values, dtype=np.float64)
    squares = float((x * x).sum())
    if len(x) == 0:
        return math.nan
    if squares == 0:
        return 1.0
    return float(x.sum() ** 2 / (len(x) * squares))


def worst_fraction_mean(values: Sequence[float], fraction: float = 0.1) -> float:
    """Mean of the lowest ``ceil(fraction * n)`` values (at least one)."""
    x = np.sort(np.asarray(values, dtype=np.float64))
    if len(x) == 0:
        return math.nan
    k = max(1, math.ceil(fraction * len(x) - 1e-9))
    return float(x[:k].mean())


def summarize(values: Sequence[float], weights: Sequence[float] | None = None) -> FairnessSummary:
    """Summarise one metric over clients; NaN values (clients without test data) are skipped."""
    x = np.asarray(values, dtype=np.float64)
    w = np.ones_like(x) if weights is None else np.asarray(weights, dtype=np.float64)
    keep = ~np.isnan(x)
    x, w = x[keep], w[keep]
    if len(x) == 0:
        nan = math.nan
        return FairnessSummary(0, nan, nan, nan, nan, nan, nan, nan)
    weighted = float((x * w).sum() / w.sum()) if w.sum() > 0 else math.nan
    return FairnessSummary(
        clients=len(x),
        mean=float(x.mean()),
        weighted_mean=weighted,
        std=float(x.std()),
        min=float(x.min()),
        max=float(x.max()),
        p10=worst_fraction_mean(x.tolist()),
        jain=jain_index(x.tolist()),
    )
