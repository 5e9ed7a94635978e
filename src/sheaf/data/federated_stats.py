"""The two halves of federated statistics: what a client computes, and how the server merges.

:func:`compute_stats` is the client half — a pure function of the client's own rows and
the queries — and :func:`merge_stats` / :func:`merge_answers` the server half — a pure
function of the clients' statistics (:mod:`sheaf.data.stats`). Counts, histograms and
vocabularies merge exactly; sums are added with ``math.fsum``, so the merge does not depend
on the order the answers arrive in beyond the last bit.

Example:
    >>> import pandas as pd
    >>> query = ColumnQuery("age", "numeric", edges=(20.0, 40.0, 60.0))
    >>> a = compute_stats(pd.DataFrame({"age": [30.0, 50.0, None]}), [query])["age"]
    >>> b = compute_stats(pd.DataFrame({"age": [40.0]}), [query])["age"]
    >>> both = merge_stats([a, b])
    >>> both.count, both.missing, both.mean, both.hist
    (3, 1, 40.0, (1, 2))
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from sheaf.core.errors import DataError
from sheaf.data.stats import CategoricalStats, ColumnQuery, ColumnStats, NumericStats

__all__ = ["compute_stats", "merge_answers", "merge_stats"]


def _numeric_stats(values: npt.NDArray[np.float64], query: ColumnQuery) -> NumericStats:
    observed = values[~np.isnan(values)]
    shifted = observed - query.center
    hist: tuple[int, ...] = ()
    if query.edges:
        edges = np.asarray(query.edges)
        bins = np.clip(np.searchsorted(edges, observed, side="right") - 1, 0, len(edges) - 2)
        hist = tuple(np.bincount(bins, minlength=len(edges) - 1).tolist())
    return NumericStats(
        count=int(observed.size),
        missing=int(values.size - observed.size),
        total=float(shifted.sum()),
        total_sq=float((shifted * shifted).sum()),
        min=float(observed.min()) if observed.size else math.inf,
        max=float(observed.max()) if observed.size else -math.inf,
        center=query.center,
        edges=query.edges,
        hist=hist,
    )


def _categorical_stats(values: npt.NDArray[Any], query: ColumnQuery) -> CategoricalStats:
    seen = Counter(str(v) for v in values if v is not None and v == v)  # v == v: not NaN
    present = sum(seen.values())
    missing = len(values) - present
    if query.categories:
        counts = {c: seen.get(c, 0) for c in query.categories}
        return CategoricalStats(present, missing, counts, present - sum(counts.values()), declared=True)
    return CategoricalStats(present, missing, dict(sorted(seen.items())))


def compute_stats(
    frame: pd.DataFrame | Mapping[str, npt.NDArray[Any]], queries: Sequence[ColumnQuery]
) -> dict[str, ColumnStats]:
    """The client half: statistics of the queried columns of ``frame`` (canonical form).

    ``frame`` is a DataFrame or column -> array. Numeric columns are floats with NaN for
    missing values (other values are parsed, text counting as missing); categorical
    columns hold strings with None for missing values (see :meth:`TabularSchema.prepare`).

    Raises:
        DataError: if a queried column is absent.
    """
    out: dict[str, ColumnStats] = {}
    for query in queries:
        if query.column not in frame:
            raise DataError(f"statistics asked for column {query.column!r}, which the data lacks")
        column = np.asarray(frame[query.column])
        if query.kind == "numeric":
            if column.dtype != np.float64:
                column = pd.to_numeric(pd.Series(column), errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
            out[query.column] = _numeric_stats(column, query)
        else:
            out[query.column] = _categorical_stats(column.astype(object), query)
    return out


def merge_stats(parts: Sequence[ColumnStats]) -> ColumnStats:
    """The server half: one column's statistics over every client, added in the given order.

    Raises:
        DataError: if there is nothing to merge, or the parts answer different queries.
    """
    if not parts:
        raise DataError("no statistics to merge: no client answered")
    first = parts[0]
    if isinstance(first, NumericStats):
        numeric = [p for p in parts if isinstance(p, NumericStats)]
        if len(numeric) != len(parts) or any(p.center != first.center or p.edges != first.edges for p in numeric):
            raise DataError("cannot merge statistics computed for different requests")
        hist = np.sum([p.hist for p in numeric], axis=0).astype(int).tolist() if first.hist else []
        return NumericStats(
            count=sum(p.count for p in numeric),
            missing=sum(p.missing for p in numeric),
            total=float(math.fsum(p.total for p in numeric)),
            total_sq=float(math.fsum(p.total_sq for p in numeric)),
            min=min(p.min for p in numeric),
            max=max(p.max for p in numeric),
            center=first.center,
            edges=first.edges,
            hist=tuple(hist),
        )
    categorical = [p for p in parts if isinstance(p, CategoricalStats)]
    if len(categorical) != len(parts) or any(p.declared != first.declared for p in categorical):
        raise DataError("cannot merge statistics computed for different requests")
    if first.declared and any(list(p.counts) != list(first.counts) for p in categorical):
        raise DataError("cannot merge category counts over different declared categories")
    merged: dict[str, int] = {}
    for part in categorical:
        for value, n in part.counts.items():
            merged[value] = merged.get(value, 0) + n
    counts = merged if first.declared else dict(sorted(merged.items()))
    return CategoricalStats(
        sum(p.count for p in categorical),
        sum(p.missing for p in categorical),
        counts,
        sum(p.other for p in categorical),
        first.declared,
    )


def merge_answers(answers: Sequence[Mapping[str, ColumnStats]]) -> dict[str, ColumnStats]:
    """Merge whole answers (column -> statistics), one per client, column by column.

    Raises:
        DataError: if the answers do not cover the same columns.
    """
    if not answers:
        raise DataError("no statistics to merge: no client answered")
    columns = list(answers[0])
    if any(list(a) != columns for a in answers):
        raise DataError("clients answered statistics for different columns")
    return {col: merge_stats([a[col] for a in answers]) for col in columns}
