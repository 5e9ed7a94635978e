"""The steps of a preprocessing pipeline: select, impute, clip, scale (encoders: :mod:`sheaf.data.encoders`).

Each step names its columns (empty: every column of a kind it accepts), says which
statistics it needs — :meth:`Step.queries`, asked stage by stage until it returns no
queries — fits its parameters from the *merged* statistics only (:meth:`Step.fit`), and
applies them to any client's rows (:meth:`Step.apply`). A step never sees rows, only
statistics, so fitting on one client (local preprocessing) and on the whole federation
(federated preprocessing) are the same code.

Rows travel between steps as :data:`Columns`: column name -> a numpy array (float64 for
numeric columns with NaN for missing values, object arrays of strings with None for
categorical ones), in order — cheap for the many small clients of a simulation.

Numeric statistics come in two stages: first count, min and max; then, where the step
needs moments or quantiles, the sums centred on the range's midpoint and a histogram over
the global range (see :class:`~sheaf.data.stats.NumericStats`).

Example:
    >>> import numpy as np
    >>> from sheaf.data.federated_stats import compute_stats
    >>> step, ctx = StandardScale(("x",)), FitContext({"x": "numeric"})
    >>> frame = {"x": np.array([1.0, 2.0, 3.0])}
    >>> stats, stage = {}, 0
    >>> while queries := step.queries(stage, stats, ctx):
    ...     stats, stage = {**stats, **compute_stats(frame, queries)}, stage + 1
    >>> step.apply(frame, step.fit(stats, ctx))["x"].round(3).tolist()
    [-1.225, 0.0, 1.225]
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt
import pandas as pd

from sheaf.core.errors import ConfigError
from sheaf.data.stats import CategoricalStats, ColumnQuery, ColumnStats, NumericStats, histogram_edges

__all__ = ["Clip", "Columns", "FitContext", "Impute", "MinMaxScale", "Select", "StandardScale", "Step"]

Stats = Mapping[str, ColumnStats]
FloatArray = npt.NDArray[np.float64]

#: A client's rows between steps: column -> values, in column order.
Columns = dict[str, npt.NDArray[Any]]


@dataclass(frozen=True)
class FitContext:
    """What a step knows besides statistics.

    Attributes:
        kinds: column -> ``"numeric"`` or ``"categorical"``, as the step receives them.
        categories: declared categories of categorical columns (absent or empty: learned).
        bins: histogram bins for quantiles (the error bound is one bin of the range).
    """

    kinds: Mapping[str, str]
    categories: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    bins: int = 1024


@dataclass(frozen=True)
class Step:
    """A pipeline step over some columns (the base of every step).

    Attributes:
        columns: the columns it works on; empty: every column of a kind it accepts.
    """

    kind: ClassVar[str] = ""
    #: Column kinds the step accepts.
    accepts: ClassVar[frozenset[str]] = frozenset({"numeric"})
    #: Encoders turn a categorical column into final numeric columns.
    encodes: ClassVar[bool] = False

    columns: tuple[str, ...] = ()

    def check(self, ctx: FitContext) -> None:
        """Raise if a column is of a kind the step cannot handle.

        Raises:
            ConfigError: naming the column and its kind.
        """
        for column in self.columns:
            if ctx.kinds[column] not in self.accepts:
                raise ConfigError(
                    f"pipeline step {self.kind!r} works on {' or '.join(sorted(self.accepts))} columns; "
                    f"{column!r} is {ctx.kinds[column]}"
                )

    def queries(self, stage: int, stats: Stats, ctx: FitContext) -> list[ColumnQuery]:
        """The statistics to ask at ``stage`` (0, 1, ...) given the answers so far; [] when done."""
        return []

    def fit(self, stats: Stats, ctx: FitContext) -> dict[str, Any]:
        """Parameters per column (JSON-ready) from the merged statistics."""
        return {}

    def apply(self, frame: Mapping[str, npt.NDArray[Any]], params: Mapping[str, Any]) -> Columns:
        """Transform rows (canonical :data:`Columns`) with fitted parameters into new columns."""
        return dict(frame)

    def outputs(self, column: str, params: Mapping[str, Any]) -> list[str]:
        """The names of the columns that ``column`` becomes."""
        return [column]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form: the step kind and its settings."""
        out: dict[str, Any] = {"step": self.kind}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            out[f.name] = list(value) if isinstance(value, tuple) else value
        return out


def _range_then(stage: int, columns: Sequence[str], stats: Stats, bins: int, histogram: bool) -> list[ColumnQuery]:
    """Stage 0: count/min/max. Stage 1: sums centred on the midpoint (+ a histogram)."""
    if stage == 0:
        return [ColumnQuery(c, "numeric") for c in columns]
    if stage > 1:
        return []
    queries = []
    for c in columns:
        s = _numeric(stats, c)
        edges = histogram_edges(s.min, s.max, bins) if histogram and s.count else ()
        queries.append(ColumnQuery(c, "numeric", edges, _midpoint(s)))
    return queries


def _numeric(stats: Stats, column: str) -> NumericStats:
    s = stats[column]
    if not isinstance(s, NumericStats):
        raise ConfigError(f"column {column!r} has categorical statistics where numeric ones were needed")
    return s


def _midpoint(s: NumericStats) -> float:
    return (s.min + s.max) / 2 if s.count else 0.0


def _map_numeric(
    frame: Mapping[str, npt.NDArray[Any]], columns: Sequence[str], fn: Callable[[str, FloatArray], FloatArray]
) -> Columns:
    out = dict(frame)
    for c in columns:
        out[c] = fn(c, np.asarray(frame[c], dtype=np.float64))
    return out


@dataclass(frozen=True)
class Select(Step):
    """Keep only these columns, in this order; later steps see only them."""

    kind: ClassVar[str] = "select"
    accepts: ClassVar[frozenset[str]] = frozenset({"numeric", "categorical"})

    def apply(self, frame: Mapping[str, npt.NDArray[Any]], params: Mapping[str, Any]) -> Columns:
        """Keep the selected columns."""
        return {c: frame[c] for c in self.columns}


@dataclass(frozen=True)
class Impute(Step):
    """Fill missing values with the federation's ``median`` or ``mean`` (numeric),
    ``most_frequent`` value (categorical), or a ``constant``.

    Categorical columns are filled with their most frequent value unless the strategy is
    ``constant``. A column no client observed is filled with 0 (numeric) or left missing.

    Attributes:
        strategy: ``median`` (default), ``mean``, ``most_frequent`` or ``constant``.
        value: the fill value for ``constant``.
    """

    kind: ClassVar[str] = "impute"
    accepts: ClassVar[frozenset[str]] = frozenset({"numeric", "categorical"})

    strategy: str = "median"
    value: float | str | None = None

    def __post_init__(self) -> None:
        if self.strategy not in ("median", "mean", "most_frequent", "constant"):
            raise ConfigError(f"impute strategy must be median, mean, most_frequent or constant, got {self.strategy!r}")
        if self.strategy == "constant" and self.value is None:
            raise ConfigError("impute strategy 'constant' needs a value")

    def check(self, ctx: FitContext) -> None:
        """Most-frequent imputation is for categorical columns only."""
        super().check(ctx)
        numeric = [c for c in self.columns if ctx.kinds[c] == "numeric"]
        if self.strategy == "most_frequent" and numeric:
            raise ConfigError(f"impute most_frequent is for categorical columns; use median or mean for {numeric}")

    def queries(self, stage: int, stats: Stats, ctx: FitContext) -> list[ColumnQuery]:
        """Category counts, and for numeric columns the range then a histogram or sums."""
        if self.strategy == "constant":
            return []
        numeric = [c for c in self.columns if ctx.kinds[c] == "numeric"]
        queries = _range_then(stage, numeric, stats, ctx.bins, histogram=self.strategy == "median")
        if stage == 0:
            queries += [ColumnQuery(c, "categorical") for c in self.columns if ctx.kinds[c] == "categorical"]
        return queries

    def fit(self, stats: Stats, ctx: FitContext) -> dict[str, Any]:
        """The fill value per column."""
        fills: dict[str, Any] = {}
        for c in self.columns:
            if self.strategy == "constant":
                fills[c] = self.value
            elif ctx.kinds[c] == "categorical":
                s = stats[c]
                assert isinstance(s, CategoricalStats)
                fills[c] = s.most_frequent()
            else:
                n = _numeric(stats, c)
                fills[c] = (n.quantile(0.5) if self.strategy == "median" else n.mean) if n.count else 0.0
        return fills

    def apply(self, frame: Mapping[str, npt.NDArray[Any]], params: Mapping[str, Any]) -> Columns:
        """Fill each column's missing values with its fitted value."""
        out = dict(frame)
        for c in self.columns:
            fill = params[c]
            if fill is None:
                continue
            values = np.asarray(frame[c])
            if values.dtype == object:
                filled = values.copy()
                filled[pd.isna(values)] = str(fill)
                out[c] = filled
            else:
                out[c] = np.where(np.isnan(values), float(fill), values)
        return out


@dataclass(frozen=True)
class Clip(Step):
    """Clip outliers to bounds: fixed ones, or quantiles of the whole federation's values.

    Attributes:
        lower_quantile: clip below this quantile (e.g. 0.01).
        upper_quantile: clip above this quantile (e.g. 0.99).
        lower: a fixed lower bound instead.
        upper: a fixed upper bound instead.
    """

    kind: ClassVar[str] = "clip"

    lower_quantile: float | None = None
    upper_quantile: float | None = None
    lower: float | None = None
    upper: float | None = None

    def __post_init__(self) -> None:
        for name in ("lower_quantile", "upper_quantile"):
            q = getattr(self, name)
            if q is not None and not 0 <= q <= 1:
                raise ConfigError(f"clip {name} must be in [0, 1], got {q}")
        if (self.lower_quantile is not None and self.lower is not None) or (
            self.upper_quantile is not None and self.upper is not None
        ):
            raise ConfigError("clip takes a quantile or a fixed bound for each side, not both")
        if all(v is None for v in (self.lower_quantile, self.upper_quantile, self.lower, self.upper)):
            raise ConfigError("clip needs a bound: lower / upper, or lower_quantile / upper_quantile")

    def queries(self, stage: int, stats: Stats, ctx: FitContext) -> list[ColumnQuery]:
        """Range then histogram when a bound is a quantile."""
        if self.lower_quantile is None and self.upper_quantile is None:
            return []
        return _range_then(stage, self.columns, stats, ctx.bins, histogram=True)

    def fit(self, stats: Stats, ctx: FitContext) -> dict[str, Any]:
        """``[low, high]`` per column; None leaves that side open."""
        bounds: dict[str, Any] = {}
        for c in self.columns:
            low, high = self.lower, self.upper
            if self.lower_quantile is not None:
                low = _numeric(stats, c).quantile(self.lower_quantile)
            if self.upper_quantile is not None:
                high = _numeric(stats, c).quantile(self.upper_quantile)
            bounds[c] = [None if v is None or math.isnan(v) else float(v) for v in (low, high)]
        return bounds

    def apply(self, frame: Mapping[str, npt.NDArray[Any]], params: Mapping[str, Any]) -> Columns:
        """Clip each column to its bounds; missing values stay missing."""

        def clip(c: str, x: FloatArray) -> FloatArray:
            low, high = params[c]
            if low is not None:
                x = np.where(x < low, low, x)
            if high is not None:
                x = np.where(x > high, high, x)
            return x

        return _map_numeric(frame, self.columns, clip)


@dataclass(frozen=True)
class StandardScale(Step):
    """Subtract the federation's mean and divide by its standard deviation (ddof 0; 0 -> 1)."""

    kind: ClassVar[str] = "standard_scale"

    def queries(self, stage: int, stats: Stats, ctx: FitContext) -> list[ColumnQuery]:
        """Range, then sums centred on its midpoint (so the variance does not cancel)."""
        return _range_then(stage, self.columns, stats, ctx.bins, histogram=False)

    def fit(self, stats: Stats, ctx: FitContext) -> dict[str, Any]:
        """``{"mean", "std"}`` per column (a column seen nowhere: 0 and 1)."""
        out = {}
        for c in self.columns:
            s = _numeric(stats, c)
            std = s.std if s.count else 1.0
            out[c] = {"mean": float(s.mean) if s.count else 0.0, "std": std if std > 0 else 1.0}
        return out

    def apply(self, frame: Mapping[str, npt.NDArray[Any]], params: Mapping[str, Any]) -> Columns:
        """Standardise each column."""
        return _map_numeric(frame, self.columns, lambda c, x: (x - params[c]["mean"]) / params[c]["std"])


@dataclass(frozen=True)
class MinMaxScale(Step):
    """Map the federation's [min, max] of each column onto [``low``, ``high``].

    Attributes:
        low: the output minimum.
        high: the output maximum.
    """

    kind: ClassVar[str] = "minmax_scale"

    low: float = 0.0
    high: float = 1.0

    def __post_init__(self) -> None:
        if not self.low < self.high:
            raise ConfigError(f"minmax_scale needs low < high, got {self.low} and {self.high}")

    def queries(self, stage: int, stats: Stats, ctx: FitContext) -> list[ColumnQuery]:
        """One stage: min and max."""
        return [ColumnQuery(c, "numeric") for c in self.columns] if stage == 0 else []

    def fit(self, stats: Stats, ctx: FitContext) -> dict[str, Any]:
        """``{"min", "max"}`` per column (a column seen nowhere: 0 and 0)."""
        out = {}
        for c in self.columns:
            s = _numeric(stats, c)
            out[c] = {"min": s.min, "max": s.max} if s.count else {"min": 0.0, "max": 0.0}
        return out

    def apply(self, frame: Mapping[str, npt.NDArray[Any]], params: Mapping[str, Any]) -> Columns:
        """Rescale each column; a constant column maps to ``low``."""

        def scale(c: str, x: FloatArray) -> FloatArray:
            lo, hi = float(params[c]["min"]), float(params[c]["max"])
            scaled: FloatArray = self.low + (x - lo) / (hi - lo if hi > lo else 1.0) * (self.high - self.low)
            return scaled

        return _map_numeric(frame, self.columns, scale)
