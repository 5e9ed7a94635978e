"""The expected shape of a tabular dataset, and each client's check of its own rows.

A :class:`TabularSchema` is declared once and shipped to every client: which columns are
numeric, which are categorical (with their categories, or learned from the federation),
which raw values mean "missing", and how many missing values a column may have. Before a
client trains — or answers a statistics request — it checks its own DataFrame against the
schema with :func:`validate_frame`; :meth:`TabularSchema.check` turns the problems into one
:class:`~sheaf.core.errors.SchemaError` line that says what is wrong and what to do:

- a declared column is absent;
- a numeric column holds text (or infinities);
- a categorical column holds a value outside its declared categories;
- a column has more missing values than the schema allows.

:meth:`TabularSchema.coerce` then gives the canonical form every later step works on:
numeric columns as float64 with missing values as NaN, categorical columns as stripped
strings with missing values as None.

Example:
    >>> import pandas as pd
    >>> schema = TabularSchema(numeric=("age",), categorical={"sex": ("F", "M")}, max_missing=0.5)
    >>> frame = pd.DataFrame({"age": [30, None, "old"], "sex": ["M", "F", "X"]})
    >>> for problem in validate_frame(schema, frame):
    ...     print(problem.kind, problem.column)
    wrong_type age
    unseen_category sex
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from sheaf.core.errors import ConfigError, SchemaError

__all__ = ["SchemaProblem", "TabularSchema", "label_problems", "validate_frame"]

# Strings that mean "no value" in a data file, whatever the column's declared markers.
_BLANKS = frozenset({"", "na", "nan", "none", "null", "<na>"})


@dataclass(frozen=True)
class SchemaProblem:
    """One way a client's data breaks the schema.

    Attributes:
        kind: ``missing_column``, ``wrong_type``, ``unseen_category`` or ``too_many_missing``.
        column: the column concerned.
        message: one line saying what is wrong and what to do.
    """

    kind: str
    column: str
    message: str


@dataclass(frozen=True)
class TabularSchema:
    """The columns of a tabular dataset, declared once for every client.

    Attributes:
        numeric: numeric columns.
        categorical: categorical column -> its categories, in encoding order. An empty
            tuple means "not declared": the vocabulary is learned from federated counts
            (federated preprocessing only) and any value is accepted.
        missing_values: column -> raw values that mean "missing" (e.g. a cholesterol of 0).
        max_missing: the largest share of missing values a column may have on one client,
            in [0, 1]; a number for every column, or column -> share (others: 1.0).
    """

    numeric: tuple[str, ...] = ()
    categorical: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    missing_values: Mapping[str, tuple[Any, ...]] = field(default_factory=dict)
    max_missing: float | Mapping[str, float] = 1.0

    def __post_init__(self) -> None:
        both = sorted(set(self.numeric) & set(self.categorical))
        if both:
            raise ConfigError(f"schema declares {both} as both numeric and categorical; choose one")
        limits = self.max_missing.values() if isinstance(self.max_missing, Mapping) else [self.max_missing]
        if any(not 0 <= v <= 1 for v in limits):
            raise ConfigError(f"schema max_missing must be shares in [0, 1], got {self.max_missing!r}")
        if isinstance(self.max_missing, Mapping):
            unknown = sorted(set(self.max_missing) - set(self.columns))
            if unknown:
                raise ConfigError(f"schema max_missing names undeclared column(s) {unknown}")

    @property
    def columns(self) -> tuple[str, ...]:
        """Every declared column, numeric first."""
        return self.numeric + tuple(self.categorical)

    @property
    def feature_names(self) -> tuple[str, ...]:
        """Output names of the standard encoding (numeric, then one-hot ``col=cat``)."""
        one_hot = tuple(f"{col}={cat}" for col, cats in self.categorical.items() for cat in cats)
        return self.numeric + one_hot

    def kind(self, column: str) -> str:
        """``"numeric"`` or ``"categorical"``.

        Raises:
            ConfigError: if the schema does not declare the column.
        """
        if column in self.categorical:
            return "categorical"
        if column in self.numeric:
            return "numeric"
        raise ConfigError(f"column {column!r} is not in the schema; declared: {list(self.columns)}")

    def missing_limit(self, column: str) -> float:
        """The largest share of missing values allowed in ``column``."""
        if isinstance(self.max_missing, Mapping):
            return float(self.max_missing.get(column, 1.0))
        return float(self.max_missing)

    def check(self, frame: pd.DataFrame, who: str = "") -> None:
        """Raise one clear error if ``frame`` breaks the schema.

        Args:
            frame: a client's rows.
            who: names the data owner in the message (e.g. ``"client 2 (Switzerland)"``).

        Raises:
            SchemaError: listing every problem on one line.
        """
        self.prepare(frame, who)

    def prepare(self, frame: pd.DataFrame, who: str = "") -> dict[str, npt.NDArray[Any]]:
        """Check ``frame`` and return its declared columns in canonical form, as arrays.

        What a pipeline works on: numeric columns as float64 (NaN: missing), categorical
        columns as object arrays of stripped strings (None: missing), in schema order.

        Raises:
            SchemaError: listing every problem on one line.
        """
        columns, problems = _convert(self, frame)
        if not problems:
            return columns
        prefix = f"{who}: " if who else ""
        if len(problems) == 1:
            raise SchemaError(prefix + problems[0].message)
        raise SchemaError(f"{prefix}{len(problems)} schema problems: " + "; ".join(p.message for p in problems))

    def coerce(self, frame: pd.DataFrame) -> pd.DataFrame:
        """The declared columns in canonical form, as a DataFrame, without checking them.

        Numeric columns become float64 with missing markers, blanks and text as NaN;
        categorical columns become stripped strings with missing values as None; absent
        columns are entirely missing.
        """
        full = frame.reindex(columns=list(self.columns)) if any(c not in frame for c in self.columns) else frame
        columns = _convert(self, full)[0]
        # object dtype keeps None as None (pandas would otherwise infer strings and use NaN)
        return pd.DataFrame(
            {
                c: pd.Series(v, index=frame.index, dtype=object if v.dtype == object else v.dtype)
                for c, v in columns.items()
            }
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form (to store with a run or send to clients)."""
        limit = dict(self.max_missing) if isinstance(self.max_missing, Mapping) else self.max_missing
        return {
            "numeric": list(self.numeric),
            "categorical": {k: list(v) for k, v in self.categorical.items()},
            "missing_values": {k: list(v) for k, v in self.missing_values.items()},
            "max_missing": limit,
        }

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> TabularSchema:
        """Rebuild a schema from :meth:`to_dict`'s form.

        Raises:
            ConfigError: if the form is not a schema.
        """
        try:
            limit = raw.get("max_missing", 1.0)
            return cls(
                numeric=tuple(str(c) for c in raw.get("numeric", ())),
                categorical={str(k): tuple(str(c) for c in v) for k, v in raw.get("categorical", {}).items()},
                missing_values={str(k): tuple(v) for k, v in raw.get("missing_values", {}).items()},
                max_missing=dict(limit) if isinstance(limit, Mapping) else float(limit),
            )
        except (AttributeError, TypeError, ValueError) as exc:
            raise ConfigError(f"not a tabular schema: {exc}") from None


def _text(value: Any) -> str | None:
    """A cell as stripped text, or None if it is empty."""
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return None
    text = str(value).strip()
    return None if text.lower() in _BLANKS else text


def _numeric(column: pd.Series, markers: Sequence[Any]) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.bool_]]:
    """Float64 values (NaN = missing) and a mask of entries that were text, not numbers."""
    if column.dtype.kind in "biuf":
        array = column.to_numpy(dtype=np.float64, na_value=np.nan, copy=True)
        wrong = np.zeros(len(array), dtype=bool)
    else:
        texts = [_text(v) for v in column.to_numpy(dtype=object)]
        numbers = pd.to_numeric(pd.Series(texts, dtype=object), errors="coerce")
        array = numbers.to_numpy(dtype=np.float64, na_value=np.nan, copy=True)
        wrong = np.isnan(array) & np.array([t is not None for t in texts], dtype=bool)
    for marker in markers:
        array[array == marker] = np.nan
    return array, wrong


def _categorical(column: pd.Series, markers: Sequence[Any]) -> npt.NDArray[Any]:
    absent = {str(m) for m in markers}
    values = np.empty(len(column), dtype=object)
    for i, value in enumerate(column.to_numpy(dtype=object)):
        text = _text(value)
        values[i] = None if text in absent else text
    return values


def _example(values: Sequence[Any]) -> str:
    shown = ", ".join(repr(v) for v in values[:3])
    return shown + (", ..." if len(values) > 3 else "")


def validate_frame(schema: TabularSchema, frame: pd.DataFrame) -> list[SchemaProblem]:
    """Every way ``frame`` breaks ``schema`` (empty if it conforms).

    A pure function of the client's rows: a deployed client runs it on its own file.
    """
    return _convert(schema, frame)[1]


def _convert(schema: TabularSchema, frame: pd.DataFrame) -> tuple[dict[str, npt.NDArray[Any]], list[SchemaProblem]]:
    """The canonical columns (those present) and every problem, in one pass over the data."""
    absent = [c for c in schema.columns if c not in frame.columns]
    problems = []
    if absent:
        problems.append(
            SchemaProblem(
                "missing_column",
                absent[0],
                f"data lacks the column(s) {absent} that the schema declares; add them (empty cells count as missing)",
            )
        )
    rows = len(frame)
    columns: dict[str, npt.NDArray[Any]] = {}
    for col in schema.columns:
        if col not in frame.columns:
            continue
        markers = schema.missing_values.get(col, ())
        raw = frame[col]
        if col in schema.categorical:
            values = _categorical(raw, markers)
            declared = schema.categorical[col]
            if declared:
                allowed = set(declared)
                unseen = Counter(v for v in values if v is not None and v not in allowed)
                if unseen:
                    problems.append(
                        SchemaProblem(
                            "unseen_category",
                            col,
                            f"column {col!r} holds {_example([v for v, _ in unseen.most_common()])} "
                            f"({sum(unseen.values())} row(s)), not among its declared categories {list(declared)}; "
                            "correct the value(s) or declare the category",
                        )
                    )
            missing = sum(1 for v in values if v is None)
        else:
            values, wrong = _numeric(raw, markers)
            infinite = np.isinf(values)
            if wrong.any() or infinite.any():
                bad = list(dict.fromkeys(raw.to_numpy(dtype=object)[wrong | infinite].tolist()))
                problems.append(
                    SchemaProblem(
                        "wrong_type",
                        col,
                        f"column {col!r} must be numeric but holds {int(wrong.sum() + infinite.sum())} value(s) that "
                        f"are not finite numbers, e.g. {_example(bad)}; fix them or declare {col!r} categorical",
                    )
                )
            missing = int(np.isnan(values).sum() - wrong.sum())
            if infinite.any():
                values = np.where(infinite, np.nan, values)
        columns[col] = values
        limit = schema.missing_limit(col)
        if rows and missing / rows > limit:
            problems.append(
                SchemaProblem(
                    "too_many_missing",
                    col,
                    f"column {col!r} is missing in {missing} of {rows} rows ({missing / rows:.0%}), more than the "
                    f"{limit:.0%} the schema allows; fill it in or raise max_missing for {col!r}",
                )
            )
    return columns, problems


def label_problems(frame: pd.DataFrame, column: str, *, classes: int | None = None) -> list[str]:
    """What is wrong with a table's label column (empty if nothing): it must exist, and every
    row must hold a whole number from 0 (below ``classes``, when given).

    Example:
        >>> label_problems(pd.DataFrame({"num": [0, 2, None, "x"]}), "num")
        ["label column 'num' is blank in 1 row(s) (row 2); every row needs a label", "label column 'num' holds 1 value(s) that are not whole numbers >= 0, e.g. 'x' (row 3); labels must be class numbers"]
        >>> label_problems(pd.DataFrame({"age": [40]}), "num")
        ["the data has no label column 'num' (columns: ['age']); add it, one class number per row"]
    """
    if column not in frame.columns:
        shown = list(frame.columns)[:12]
        return [f"the data has no label column {column!r} (columns: {shown}); add it, one class number per row"]
    raw = frame[column]
    text = raw.map(_text)
    blank = np.flatnonzero(text.isna().to_numpy())
    problems = []
    if len(blank):
        rows = ", ".join(str(r) for r in blank[:5]) + (", ..." if len(blank) > 5 else "")
        problems.append(
            f"label column {column!r} is blank in {len(blank)} row(s) (row {rows}); every row needs a label"
        )
    numbers = pd.to_numeric(text, errors="coerce").to_numpy(dtype=np.float64)
    bad = ~np.isnan(numbers) & ((numbers < 0) | (numbers != np.floor(numbers)))
    bad |= np.isnan(numbers) & text.notna().to_numpy()
    if classes is not None:
        bad |= ~np.isnan(numbers) & (numbers >= classes)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        wanted = "whole numbers >= 0" if classes is None else f"whole numbers from 0 to {classes - 1}"
        problems.append(
            f"label column {column!r} holds {int(bad.sum())} value(s) that are not {wanted}, e.g. "
            f"{raw.iloc[first]!r} (row {first}); labels must be class numbers"
        )
    return problems
