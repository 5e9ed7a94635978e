"""Preprocessing pipelines on pandas DataFrames, fitted locally or from federated statistics.

A :class:`Pipeline` is declared once — a :class:`~sheaf.data.schema.TabularSchema` plus
steps (:mod:`sheaf.data.steps`) — and runs on every client. Fitting it never pools rows:

1. the server's :class:`PipelineFit` asks a :class:`StatsRequest` (which columns, which
   statistics, and the steps fitted so far);
2. every client answers with :func:`answer_request` — a pure function of its own
   DataFrame: check the schema, apply the fitted steps, compute the statistics;
3. the server merges the answers (:func:`~sheaf.data.federated_stats.merge_answers`, a pure function
   of the statistics), optionally passes them through a hook (the seam for DP noise), and
   fits the next step from them.

Steps are fitted in order, each on the output of the steps before it, so a scaler after an
imputer sees the imputed values — exactly as if the pipeline were fitted on the pooled rows:
means and standard deviations agree with pooled ones to float rounding; vocabularies
exactly; quantiles (medians, clip bounds) within one histogram bin of the pooled range.
Local preprocessing is the same procedure with a single client (:meth:`Pipeline.fit`).

The request, the answers and the :class:`FittedPipeline` are JSON (``to_dict``/``from_dict``):
the fitted pipeline is stored with the run and sent to clients; nothing is pickled.

Example:
    >>> import pandas as pd
    >>> from sheaf.data.encoders import OneHot
    >>> from sheaf.data.steps import Impute, StandardScale
    >>> schema = TabularSchema(numeric=("age",), categorical={"sex": ()})
    >>> pipeline = Pipeline(schema, (Impute(("age",)), StandardScale(), OneHot()))
    >>> a = pd.DataFrame({"age": [30.0, None], "sex": ["M", "F"]})
    >>> b = pd.DataFrame({"age": [50.0, 40.0], "sex": ["F", "X"]})
    >>> fitted = fit_federated(pipeline, [a, b])
    >>> fitted.feature_names
    ('age', 'sex=F', 'sex=M', 'sex=X')
    >>> round(fitted.params[1]["age"]["mean"], 2)  # the median imputed is within 20/1024 of 40
    40.0
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from sheaf.core.errors import ConfigError, DataError
from sheaf.data.encoders import OneHot, Ordinal
from sheaf.data.federated_stats import compute_stats, merge_answers
from sheaf.data.schema import TabularSchema
from sheaf.data.stats import ColumnQuery, ColumnStats, StatsHook, stats_from_dict
from sheaf.data.steps import Clip, Columns, FitContext, Impute, MinMaxScale, Select, StandardScale, Step

__all__ = [
    "STEPS",
    "FittedPipeline",
    "Pipeline",
    "PipelineFit",
    "StatsRequest",
    "answer_request",
    "answers_from_dict",
    "fit_federated",
    "standard_pipeline",
]


#: Step kinds by name, to rebuild pipelines from JSON.
STEPS: dict[str, type[Step]] = {
    cls.kind: cls for cls in (Select, Impute, Clip, StandardScale, MinMaxScale, OneHot, Ordinal)
}


@dataclass(frozen=True)
class Pipeline:
    """A schema and the steps that turn a client's rows into model features.

    Steps with no columns are resolved to every column of a kind they accept at that
    point. Encoders (one-hot, ordinal) make their columns final; every categorical column
    must be encoded (or dropped by a select) by the end.

    Attributes:
        schema: the columns every client must have.
        steps: the steps, in order.
        bins: histogram bins for quantiles (medians, clip bounds): the estimate is within
            ``(max - min) / bins`` of the exact sample quantile.

    Raises:
        ConfigError: if a step names an unknown or unsuitable column, or a categorical
            column is never encoded.
    """

    schema: TabularSchema
    steps: tuple[Step, ...] = ()
    bins: int = 1024
    _contexts: tuple[FitContext, ...] = field(default=(), init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.bins < 1:
            raise ConfigError(f"pipeline bins must be >= 1, got {self.bins}")
        kinds = {c: self.schema.kind(c) for c in self.schema.columns}
        declared = {c: cats for c, cats in self.schema.categorical.items() if cats}
        resolved, contexts = [], []
        for step in self.steps:
            columns = step.columns or tuple(c for c, k in kinds.items() if k in step.accepts)
            unknown = [c for c in columns if c not in kinds]
            if unknown:
                raise ConfigError(
                    f"pipeline step {step.kind!r} names {unknown}, which are not columns at that point "
                    f"(available: {list(kinds)}); declare them in the schema, and keep them out of earlier "
                    "select and encoding steps"
                )
            step = dataclasses.replace(step, columns=columns)
            context = FitContext(dict(kinds), declared, self.bins)
            step.check(context)
            resolved.append(step)
            contexts.append(context)
            if isinstance(step, Select):
                kinds = {c: kinds[c] for c in columns}
            elif step.encodes:
                kinds = {c: k for c, k in kinds.items() if c not in columns}
        left = [c for c, k in kinds.items() if k == "categorical"]
        if left:
            raise ConfigError(f"categorical column(s) {left} are never encoded; add a one_hot or ordinal step for them")
        object.__setattr__(self, "steps", tuple(resolved))
        object.__setattr__(self, "_contexts", tuple(contexts))

    def context(self, index: int) -> FitContext:
        """What step ``index`` knows about its input columns."""
        return self._contexts[index]

    @property
    def learned_vocabularies(self) -> tuple[str, ...]:
        """Encoded columns whose categories are learned rather than declared."""
        return tuple(
            c for step in self.steps if step.encodes for c in step.columns if not self.schema.categorical.get(c)
        )

    def apply(self, canonical: Mapping[str, npt.NDArray[Any]], params: Sequence[Mapping[str, Any]]) -> Columns:
        """Apply the first ``len(params)`` steps to rows in canonical form (see :meth:`TabularSchema.prepare`)."""
        frame = dict(canonical)
        for step, p in zip(self.steps, params):
            frame = step.apply(frame, p)
        return frame

    def fit(self, frame: pd.DataFrame, hook: StatsHook | None = None) -> FittedPipeline:
        """Fit on one client's own rows (local preprocessing).

        Raises:
            SchemaError: if the rows break the schema.
        """
        return fit_federated(self, [frame], hook=hook)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form."""
        return {"schema": self.schema.to_dict(), "steps": [s.to_dict() for s in self.steps], "bins": self.bins}

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Pipeline:
        """Rebuild a pipeline from :meth:`to_dict`'s form.

        Raises:
            ConfigError: on an unknown step or a malformed form.
        """
        steps = []
        for spec in raw.get("steps", ()):
            settings = dict(spec)
            kind = settings.pop("step", None)
            if kind not in STEPS:
                raise ConfigError(f"unknown pipeline step {kind!r}; choose one of: {', '.join(sorted(STEPS))}")
            settings["columns"] = tuple(settings.get("columns", ()))
            try:
                steps.append(STEPS[kind](**settings))
            except TypeError as exc:
                raise ConfigError(f"pipeline step {kind!r}: {exc}") from None
        return cls(TabularSchema.from_dict(raw["schema"]), tuple(steps), int(raw.get("bins", 1024)))


def standard_pipeline(schema: TabularSchema, bins: int = 1024) -> Pipeline:
    """Median imputation and standard scaling of numeric columns, one-hot categorical ones.

    A missing or unknown category encodes as all zeros.
    """
    steps: list[Step] = []
    if schema.numeric:
        steps += [Impute(schema.numeric, "median"), StandardScale(schema.numeric)]
    if schema.categorical:
        steps.append(OneHot(tuple(schema.categorical)))
    return Pipeline(schema, tuple(steps), bins)


@dataclass(frozen=True)
class FittedPipeline:
    """A pipeline with the parameters of every step; applies them to any client's rows.

    Attributes:
        pipeline: the declared pipeline.
        params: per step, its fitted parameters (JSON-ready).
    """

    pipeline: Pipeline
    params: tuple[Mapping[str, Any], ...]

    def __post_init__(self) -> None:
        if len(self.params) != len(self.pipeline.steps):
            raise DataError(f"{len(self.params)} fitted steps for a pipeline of {len(self.pipeline.steps)}")

    @property
    def schema(self) -> TabularSchema:
        """The schema rows must follow."""
        return self.pipeline.schema

    @property
    def feature_names(self) -> tuple[str, ...]:
        """Names of the output columns, in order."""
        names = list(self.schema.columns)
        for step, p in zip(self.pipeline.steps, self.params):
            if isinstance(step, Select):
                names = list(step.columns)
            elif step.encodes:
                names = [out for c in names for out in (step.outputs(c, p) if c in step.columns else [c])]
        return tuple(names)

    def transform_frame(self, frame: pd.DataFrame, who: str = "") -> pd.DataFrame:
        """Check ``frame`` against the schema and apply every step.

        Raises:
            SchemaError: if the rows break the schema.
        """
        return pd.DataFrame(self.pipeline.apply(self.schema.prepare(frame, who), self.params), index=frame.index)

    def transform(self, frame: pd.DataFrame, who: str = "") -> npt.NDArray[np.float32]:
        """The model's features: a float32 matrix, one row per row of ``frame``.

        Raises:
            SchemaError: if the rows break the schema.
            DataError: if values are still missing after the pipeline (add an impute step).
        """
        out = self.pipeline.apply(self.schema.prepare(frame, who), self.params)
        if out:
            matrix = np.column_stack([np.asarray(v, dtype=np.float64) for v in out.values()])
        else:
            matrix = np.zeros((len(frame), 0))
        holes = [c for c, bad in zip(out, np.asarray(np.isnan(matrix).any(axis=0))) if bad]
        if holes:
            raise DataError(f"column(s) {holes} still have missing values after the pipeline; add an impute step")
        return matrix.astype(np.float32)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form: the pipeline and every step's parameters."""
        return {"pipeline": self.pipeline.to_dict(), "params": [dict(p) for p in self.params]}

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> FittedPipeline:
        """Rebuild a fitted pipeline from :meth:`to_dict`'s form."""
        return cls(Pipeline.from_dict(raw["pipeline"]), tuple(dict(p) for p in raw["params"]))


@dataclass(frozen=True)
class StatsRequest:
    """What the server asks every client: statistics of its rows after the steps fitted so far.

    Attributes:
        pipeline: the pipeline being fitted (its schema is what clients check).
        params: parameters of the steps fitted so far, applied before computing.
        queries: the statistics to compute.
    """

    pipeline: Pipeline
    params: tuple[Mapping[str, Any], ...]
    queries: tuple[ColumnQuery, ...]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form (what travels to a deployed client)."""
        return {
            "pipeline": self.pipeline.to_dict(),
            "params": [dict(p) for p in self.params],
            "queries": [q.to_dict() for q in self.queries],
        }

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> StatsRequest:
        """Rebuild a request from :meth:`to_dict`'s form."""
        return cls(
            Pipeline.from_dict(raw["pipeline"]),
            tuple(dict(p) for p in raw["params"]),
            tuple(ColumnQuery.from_dict(q) for q in raw["queries"]),
        )


def answer_request(frame: pd.DataFrame, request: StatsRequest, who: str = "") -> dict[str, ColumnStats]:
    """The client half: check the schema, apply the fitted steps, compute the statistics.

    A pure function of the client's rows and the request; only statistics leave.

    Raises:
        SchemaError: if the rows break the schema.
    """
    canonical = request.pipeline.schema.prepare(frame, who)
    return compute_stats(request.pipeline.apply(canonical, request.params), request.queries)


class PipelineFit:
    """The server half of federated fitting: a state machine of requests and merged answers.

    Transport-agnostic: a simulation answers requests in-process
    (:func:`fit_federated`); a deployment sends :meth:`request`'s JSON to its clients,
    merges their answers and calls :meth:`receive`.

    Args:
        pipeline: the pipeline to fit.
        hook: applied to every merged answer before it is used (the seam for DP noise).
    """

    def __init__(self, pipeline: Pipeline, hook: StatsHook | None = None) -> None:
        self.pipeline = pipeline
        self.hook = hook
        self.passes = 0
        self._step = 0
        self._stage = 0
        self._stats: dict[str, ColumnStats] = {}
        self._params: list[Mapping[str, Any]] = []

    def request(self) -> StatsRequest | None:
        """The next request, or None when every step is fitted."""
        steps = self.pipeline.steps
        while self._step < len(steps):
            step, context = steps[self._step], self.pipeline.context(self._step)
            queries = step.queries(self._stage, self._stats, context)
            if queries:
                return StatsRequest(self.pipeline, tuple(self._params), tuple(queries))
            self._params.append(step.fit(self._stats, context))
            self._step, self._stage, self._stats = self._step + 1, 0, {}
        return None

    def receive(self, merged: Mapping[str, ColumnStats]) -> None:
        """Take the merged answer to the current request."""
        if self.hook is not None:
            merged = self.hook(merged)
        self._stats = {**self._stats, **merged}
        self._stage += 1
        self.passes += 1

    def result(self) -> FittedPipeline:
        """The fitted pipeline.

        Raises:
            DataError: if requests are still open.
        """
        if self.request() is not None:
            raise DataError("the pipeline is not fitted yet: answer the open statistics request first")
        return FittedPipeline(self.pipeline, tuple(self._params))


def fit_federated(
    pipeline: Pipeline,
    frames: Sequence[pd.DataFrame],
    *,
    hook: StatsHook | None = None,
    names: Sequence[str] = (),
) -> FittedPipeline:
    """Fit ``pipeline`` from the statistics of each client's rows, never pooling them.

    Args:
        pipeline: the pipeline to fit.
        frames: each client's rows (its training rows), in client order.
        hook: applied to every merged answer before use (e.g. to add DP noise).
        names: a name per client for schema error messages.

    Returns:
        The fitted pipeline, identical for every client.

    Raises:
        SchemaError: if a client's rows break the schema (naming the client).
        DataError: if there are no clients.
    """
    if not frames:
        raise DataError("cannot fit a pipeline over no clients")
    current = [
        pipeline.schema.prepare(frame, names[i] if names else (f"client {i}" if len(frames) > 1 else ""))
        for i, frame in enumerate(frames)
    ]
    fit = PipelineFit(pipeline, hook)
    applied = 0
    while (request := fit.request()) is not None:
        # Each client keeps its rows transformed by the steps fitted so far and applies only
        # the new ones: the same result as answer_request, without redoing every step per pass.
        if len(request.params) > applied:
            steps = pipeline.steps[applied : len(request.params)]
            new = request.params[applied:]
            for i, frame in enumerate(current):
                for step, params in zip(steps, new):
                    frame = step.apply(frame, params)
                current[i] = frame
            applied = len(request.params)
        fit.receive(merge_answers([compute_stats(frame, request.queries) for frame in current]))
    return fit.result()


def answers_from_dict(raw: Mapping[str, Mapping[str, Any]]) -> dict[str, ColumnStats]:
    """Rebuild a client's answer (column -> statistics) from its JSON form."""
    return {str(c): stats_from_dict(s) for c, s in raw.items()}
