"""Federated statistics: what a client computes on its own rows, and how the server merges them.

The data never leave the clients; statistics do. For each column a request names, a client
computes a small summary of *its own* values —
:func:`~sheaf.data.federated_stats.compute_stats`, a pure function of its DataFrame — and
the server adds the summaries up — :func:`~sheaf.data.federated_stats.merge_stats`, a pure
function of the summaries. This module holds the summaries and the questions. Nothing else is needed to fit a preprocessing pipeline
(:mod:`sheaf.data.pipeline`) or to describe a federation (:mod:`sheaf.data.analytics`).

- :class:`NumericStats`: rows observed and missing, the sum and sum of squares of
  ``x - center``, min and max, and optionally a fixed-bin histogram. Means and standard
  deviations follow exactly; quantiles follow approximately from the histogram, within one
  bin width of the exact sample quantile.
- :class:`CategoricalStats`: rows observed and missing, and counts per value (an open
  vocabulary), or per declared category plus one count of everything else.

Secure aggregation and differential privacy plug in here. Every count, sum and histogram
bin is *additive*: :meth:`NumericStats.additive` and :meth:`CategoricalStats.additive` give
them as one float vector and ``with_additive`` puts a (securely summed, or noised) vector
back, so a secure-sum protocol can add the clients' vectors without seeing any one of them,
and a DP mechanism can perturb the merged vector before anything is fitted from it (the
``hook`` of :func:`sheaf.data.fit_federated`). Min, max and open vocabularies are not
additive: under secure aggregation declare the categories and clip to declared bounds.

Example:
    >>> stats = NumericStats(count=3, missing=1, total=0.0, total_sq=200.0, min=30.0, max=50.0,
    ...                      center=40.0, edges=(30.0, 40.0, 50.0), hist=(1, 2))
    >>> stats.mean, round(stats.std, 3), stats.quantile(0.5) <= 40.0 + 10.0
    (40.0, 8.165, True)
    >>> stats_from_dict(stats.to_dict()) == stats
    True

References:
    Chan, Golub, LeVeque. Algorithms for computing the sample variance: analysis and
    recommendations. The American Statistician 37(3), 1983 (sums of shifted data).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import numpy.typing as npt

from sheaf.core.errors import DataError

__all__ = [
    "CategoricalStats",
    "ColumnQuery",
    "ColumnStats",
    "NumericStats",
    "StatsHook",
    "histogram_edges",
    "stats_from_dict",
]


@dataclass(frozen=True)
class ColumnQuery:
    """What to compute for one column.

    Attributes:
        column: the column.
        kind: ``"numeric"`` or ``"categorical"``.
        edges: numeric: increasing histogram bin edges (empty: no histogram).
        center: numeric: sums are taken of ``x - center`` (a value near the mean keeps
            the variance free of cancellation).
        categories: categorical: count exactly these values, in this order, plus one
            ``other`` count (a fixed-length, additive summary); empty: every value seen.
    """

    column: str
    kind: str
    edges: tuple[float, ...] = ()
    center: float = 0.0
    categories: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in ("numeric", "categorical"):
            raise DataError(f"a statistics query's kind must be 'numeric' or 'categorical', got {self.kind!r}")
        if len(self.edges) == 1 or any(b < a for a, b in zip(self.edges, self.edges[1:])):
            raise DataError(f"histogram edges for {self.column!r} must be at least two non-decreasing numbers")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form (a statistics request travels to clients)."""
        return {
            "column": self.column,
            "kind": self.kind,
            "edges": list(self.edges),
            "center": self.center,
            "categories": list(self.categories),
        }

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> ColumnQuery:
        """Rebuild a query from :meth:`to_dict`'s form."""
        return cls(
            str(raw["column"]),
            str(raw["kind"]),
            tuple(float(e) for e in raw.get("edges", ())),
            float(raw.get("center", 0.0)),
            tuple(str(c) for c in raw.get("categories", ())),
        )


def histogram_edges(low: float, high: float, bins: int) -> tuple[float, ...]:
    """``bins`` equal-width bins from ``low`` to ``high`` (both exact)."""
    if bins < 1:
        raise DataError(f"a histogram needs at least 1 bin, got {bins}")
    if not (math.isfinite(low) and math.isfinite(high)) or high < low:
        return ()
    return tuple(float(e) for e in np.linspace(low, high, bins + 1))


@dataclass(frozen=True)
class NumericStats:
    """One numeric column's summary on one client, or merged over many.

    Attributes:
        count: rows with a value.
        missing: rows without one.
        total: sum of ``x - center``.
        total_sq: sum of ``(x - center) ** 2``.
        min: smallest value (``inf`` when ``count`` is 0).
        max: largest value (``-inf`` when ``count`` is 0).
        center: the shift of ``total`` and ``total_sq``.
        edges: histogram bin edges (empty: no histogram).
        hist: values per bin; values outside the edges count in the end bins.
    """

    count: int
    missing: int
    total: float
    total_sq: float
    min: float
    max: float
    center: float = 0.0
    edges: tuple[float, ...] = ()
    hist: tuple[int, ...] = ()

    @property
    def rows(self) -> int:
        """Rows seen, with or without a value."""
        return self.count + self.missing

    @property
    def mean(self) -> float:
        """Mean of the observed values (NaN if none)."""
        return self.center + self.total / self.count if self.count else math.nan

    @property
    def variance(self) -> float:
        """Population variance (ddof 0) of the observed values (NaN if none)."""
        if not self.count:
            return math.nan
        shift = self.total / self.count
        return max(self.total_sq / self.count - shift * shift, 0.0)

    @property
    def std(self) -> float:
        """Population standard deviation (ddof 0)."""
        return math.sqrt(self.variance)

    def quantile(self, q: float) -> float:
        """The ``q``-quantile estimated from the histogram.

        Defined as numpy's default (``method="linear"``): interpolation between the sorted
        values at positions ``floor(h)`` and ``ceil(h)``, ``h = q * (count - 1)``. Each of the
        two is placed inside its histogram bin, so the estimate is within one bin width of
        the exact sample quantile, and never outside [min, max].

        Raises:
            DataError: if no histogram was computed or ``q`` is outside [0, 1].
        """
        if not 0 <= q <= 1:
            raise DataError(f"quantile must be in [0, 1], got {q}")
        if not self.hist:
            raise DataError("these statistics have no histogram; ask for bin edges to estimate quantiles")
        if not self.count:
            return math.nan
        h = q * (self.count - 1)
        low, high = self._order_statistic(math.floor(h)), self._order_statistic(math.ceil(h))
        return low + (h - math.floor(h)) * (high - low)

    def _order_statistic(self, k: int) -> float:
        """The k-th smallest value (0-based), placed evenly inside its bin."""
        cumulative = np.cumsum(self.hist)
        b = int(np.searchsorted(cumulative, k, side="right"))
        before = int(cumulative[b - 1]) if b else 0
        inside = (k - before + 0.5) / self.hist[b]
        value = self.edges[b] + inside * (self.edges[b + 1] - self.edges[b])
        return float(min(max(value, self.min), self.max))

    def additive(self) -> npt.NDArray[np.float64]:
        """The additive part as one vector: count, missing, total, total_sq, then the bins."""
        return np.array([self.count, self.missing, self.total, self.total_sq, *self.hist], dtype=np.float64)

    def with_additive(self, vector: npt.ArrayLike) -> NumericStats:
        """These statistics with the additive part replaced (e.g. by a secure sum or a noised one).

        Counts are rounded to integers and kept non-negative.
        """
        values = np.asarray(vector, dtype=np.float64)
        if values.shape != (4 + len(self.hist),):
            raise DataError(f"expected an additive vector of length {4 + len(self.hist)}, got shape {values.shape}")
        counts = np.maximum(np.rint(values[[0, 1, *range(4, len(values))]]), 0).astype(int).tolist()
        return replace(
            self,
            count=counts[0],
            missing=counts[1],
            total=float(values[2]),
            total_sq=float(values[3]),
            hist=tuple(counts[2:]),
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form (min/max are null when nothing was observed)."""
        return {
            "kind": "numeric",
            "count": self.count,
            "missing": self.missing,
            "total": self.total,
            "total_sq": self.total_sq,
            "min": self.min if self.count else None,
            "max": self.max if self.count else None,
            "center": self.center,
            "edges": list(self.edges),
            "hist": list(self.hist),
        }


@dataclass(frozen=True)
class CategoricalStats:
    """One categorical column's summary on one client, or merged over many.

    Attributes:
        count: rows with a value.
        missing: rows without one.
        counts: value -> rows; with declared categories, every declared category in
            order (zeros included); otherwise every value seen, sorted.
        other: rows whose value is outside the declared categories.
        declared: whether ``counts`` follows declared categories (fixed length, additive).
    """

    count: int
    missing: int
    counts: Mapping[str, int] = field(default_factory=dict)
    other: int = 0
    declared: bool = False

    @property
    def rows(self) -> int:
        """Rows seen, with or without a value."""
        return self.count + self.missing

    def vocabulary(self, min_count: int = 1) -> tuple[str, ...]:
        """Values seen at least ``min_count`` times, sorted."""
        return tuple(sorted(v for v, n in self.counts.items() if n >= min_count))

    def most_frequent(self) -> str | None:
        """The most common value (ties: the first in sorted order), or None if none."""
        ranked = sorted(self.counts.items(), key=lambda kv: (-kv[1], kv[0]))
        return ranked[0][0] if ranked and ranked[0][1] > 0 else None

    def additive(self) -> npt.NDArray[np.float64]:
        """count, missing, other, then the declared categories' counts.

        Raises:
            DataError: for an open vocabulary, which is not a fixed-length sum.
        """
        if not self.declared:
            raise DataError("an open vocabulary is not a fixed-length sum; declare the categories to add it securely")
        return np.array([self.count, self.missing, self.other, *self.counts.values()], dtype=np.float64)

    def with_additive(self, vector: npt.ArrayLike) -> CategoricalStats:
        """These statistics with the additive part replaced (rounded, non-negative)."""
        values = np.maximum(np.rint(np.asarray(vector, dtype=np.float64)), 0).astype(int).tolist()
        if len(values) != 3 + len(self.counts):
            raise DataError(f"expected an additive vector of length {3 + len(self.counts)}, got {len(values)}")
        return replace(
            self, count=values[0], missing=values[1], other=values[2], counts=dict(zip(self.counts, values[3:]))
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form."""
        return {
            "kind": "categorical",
            "count": self.count,
            "missing": self.missing,
            "counts": dict(self.counts),
            "other": self.other,
            "declared": self.declared,
        }


#: Statistics of one column.
ColumnStats = NumericStats | CategoricalStats

#: A transform of merged statistics before they are used: the seam for DP noise.
StatsHook = Callable[[Mapping[str, ColumnStats]], Mapping[str, ColumnStats]]


def stats_from_dict(raw: Mapping[str, Any]) -> ColumnStats:
    """Rebuild statistics from their ``to_dict`` form, checking types and counts.

    Raises:
        DataError: if the form is malformed (wrong kind, negative counts, bad histogram).
    """
    try:
        if raw["kind"] == "numeric":
            count = int(raw["count"])
            numeric = NumericStats(
                count=count,
                missing=int(raw["missing"]),
                total=float(raw["total"]),
                total_sq=float(raw["total_sq"]),
                min=float(raw["min"]) if raw["min"] is not None else math.inf,
                max=float(raw["max"]) if raw["max"] is not None else -math.inf,
                center=float(raw.get("center", 0.0)),
                edges=tuple(float(e) for e in raw.get("edges", ())),
                hist=tuple(int(h) for h in raw.get("hist", ())),
            )
            if numeric.hist and (len(numeric.hist) != len(numeric.edges) - 1 or sum(numeric.hist) != count):
                raise ValueError("histogram does not match its edges or count")
            bad = min(count, numeric.missing, *numeric.hist) < 0
            stats: ColumnStats = numeric
        elif raw["kind"] == "categorical":
            counts = {str(k): int(v) for k, v in raw["counts"].items()}
            stats = CategoricalStats(
                int(raw["count"]), int(raw["missing"]), counts, int(raw.get("other", 0)), bool(raw.get("declared"))
            )
            bad = min(stats.count, stats.missing, stats.other, *counts.values()) < 0
        else:
            raise ValueError(f"unknown kind {raw['kind']!r}")
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise DataError(f"malformed column statistics: {exc}") from None
    if bad:
        raise DataError("malformed column statistics: negative counts")
    return stats
