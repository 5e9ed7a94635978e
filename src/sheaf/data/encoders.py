"""Encoders: categorical columns into numbers, with vocabularies declared or learned from federated counts.

:class:`OneHot` makes one indicator column per category; :class:`Ordinal` the category's
index. Declared categories (in the schema) are used as declared; otherwise the vocabulary
is what the federation's merged value counts hold — the union of the clients' values, no
rows needed. An encoder's output columns are final: later steps cannot refer to them.

Example:
    >>> import numpy as np
    >>> from sheaf.data.stats import CategoricalStats
    >>> step, ctx = OneHot(("c",), min_count=2), FitContext({"c": "categorical"})
    >>> params = step.fit({"c": CategoricalStats(5, 0, {"a": 3, "b": 1, "z": 1})}, ctx)
    >>> params, step.apply({"c": np.array(["a", "b", None], dtype=object)}, params)["c=a"].tolist()
    ({'c': ['a']}, [1.0, 0.0, 0.0])
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from sheaf.data.stats import CategoricalStats, ColumnQuery, ColumnStats
from sheaf.data.steps import Columns, FitContext, Step

__all__ = ["OneHot", "Ordinal"]

Stats = Mapping[str, ColumnStats]


def _vocabulary(step: _Categorical, column: str, stats: Stats, ctx: FitContext) -> list[str]:
    declared = ctx.categories.get(column, ())
    if declared:
        return list(declared)
    s = stats[column]
    assert isinstance(s, CategoricalStats)
    kept = [(v, n) for v, n in s.counts.items() if n >= step.min_count]
    if step.max_categories:
        kept = sorted(kept, key=lambda vn: (-vn[1], vn[0]))[: step.max_categories]
    return sorted(v for v, _ in kept)


@dataclass(frozen=True)
class _Categorical(Step):
    """An encoder: a vocabulary per categorical column, declared or learned from federated counts.

    Attributes:
        min_count: the fewest rows a learned category needs.
        max_categories: keep at most this many learned categories (0: no limit).
    """

    accepts: ClassVar[frozenset[str]] = frozenset({"categorical"})
    encodes: ClassVar[bool] = True

    min_count: int = 1
    max_categories: int = 0

    def queries(self, stage: int, stats: Stats, ctx: FitContext) -> list[ColumnQuery]:
        """Counts of every value, for the columns whose categories are not declared."""
        if stage > 0:
            return []
        return [ColumnQuery(c, "categorical") for c in self.columns if not ctx.categories.get(c)]

    def fit(self, stats: Stats, ctx: FitContext) -> dict[str, Any]:
        """The vocabulary per column."""
        return {c: _vocabulary(self, c, stats, ctx) for c in self.columns}


@dataclass(frozen=True)
class OneHot(_Categorical):
    """One indicator column ``col=value`` per category; a missing or unknown value is all zeros.

    Declared categories are used as declared (in their order); otherwise the vocabulary is
    every value the federation holds at least ``min_count`` times (at most
    ``max_categories`` of the most frequent, if set), sorted.

    Attributes:
        min_count: the fewest rows a learned category needs.
        max_categories: keep at most this many learned categories (0: no limit).
    """

    kind: ClassVar[str] = "one_hot"

    def apply(self, frame: Mapping[str, npt.NDArray[Any]], params: Mapping[str, Any]) -> Columns:
        """Replace each column by its indicator columns, in place."""
        parts: Columns = {}
        for c in frame:
            if c not in self.columns:
                parts[c] = frame[c]
                continue
            values = np.asarray(frame[c], dtype=object)
            for cat in params[c]:
                parts[f"{c}={cat}"] = (values == cat).astype(np.float64)
        return parts

    def outputs(self, column: str, params: Mapping[str, Any]) -> list[str]:
        """``col=value`` for every category."""
        return [f"{column}={cat}" for cat in params[column]]


@dataclass(frozen=True)
class Ordinal(_Categorical):
    """The category's position in the vocabulary (declared order, or sorted); -1 if missing or unknown.

    Attributes:
        min_count: the fewest rows a learned category needs.
        max_categories: keep at most this many learned categories (0: no limit).
    """

    kind: ClassVar[str] = "ordinal"

    def apply(self, frame: Mapping[str, npt.NDArray[Any]], params: Mapping[str, Any]) -> Columns:
        """Replace each column by its codes."""
        out = dict(frame)
        for c in self.columns:
            codes = {cat: float(i) for i, cat in enumerate(params[c])}
            out[c] = np.array([codes.get(v, -1.0) for v in np.asarray(frame[c], dtype=object)], dtype=np.float64)
        return out
