"""Pipelines: fitted from federated statistics, they equal the pipeline fitted on pooled rows."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sheaf.core.config import DataConfig
from sheaf.core.errors import ConfigError, DataError, SchemaError
from sheaf.data.catalog import assign_rows, build_federation, client_frames, load_dataset
from sheaf.data.encoders import OneHot, Ordinal
from sheaf.data.federated_stats import merge_answers
from sheaf.data.pipeline import (
    FittedPipeline,
    Pipeline,
    PipelineFit,
    StatsRequest,
    answer_request,
    answers_from_dict,
    fit_federated,
    standard_pipeline,
)
from sheaf.data.schema import TabularSchema
from sheaf.data.sources import HEART_SCHEMA
from sheaf.data.stats import ColumnStats, NumericStats
from sheaf.data.steps import Clip, Impute, MinMaxScale, Select, StandardScale
from sheaf.run.simulate import simulate
from sheaf.run.store import RunStore

HEART = DataConfig(dataset="heart", partition="natural", clients=4)


def heart_training_frames(seed: int = 0) -> list[pd.DataFrame]:
    raw = load_dataset("heart")
    return client_frames(raw, assign_rows(HEART, raw, seed))


def test_on_heart_the_federated_pipeline_equals_the_pooled_one() -> None:
    frames = heart_training_frames()
    pipeline = standard_pipeline(HEART_SCHEMA)
    federated = fit_federated(pipeline, frames)
    pooled_frame = pd.concat(frames)
    pooled = pipeline.fit(pooled_frame)

    medians, scales, vocab = federated.params
    assert medians == pooled.params[0]  # same global range -> same histogram -> the same medians
    assert vocab == pooled.params[2] == {c: list(cats) for c, cats in HEART_SCHEMA.categorical.items()}
    # Means and stds against an independent computation on the pooled rows, imputed with
    # the federated medians: equal to 1e-9.
    imputed = HEART_SCHEMA.coerce(pooled_frame)[list(HEART_SCHEMA.numeric)].fillna(pd.Series(medians))
    for column in HEART_SCHEMA.numeric:
        values = imputed[column].to_numpy()
        assert scales[column]["mean"] == pytest.approx(values.mean(), abs=1e-9, rel=0)
        assert scales[column]["std"] == pytest.approx(values.std(), abs=1e-9, rel=0)
        assert scales[column] == pytest.approx(pooled.params[1][column], abs=1e-9, rel=0)
        # medians: within one histogram bin of the exact pooled median
        observed = HEART_SCHEMA.coerce(pooled_frame)[column].dropna().to_numpy()
        width = (observed.max() - observed.min()) / pipeline.bins
        assert abs(medians[column] - np.median(observed)) <= width


def test_on_heart_learned_vocabularies_equal_the_pooled_ones_exactly() -> None:
    undeclared = TabularSchema(
        numeric=HEART_SCHEMA.numeric,
        categorical=dict.fromkeys(HEART_SCHEMA.categorical, ()),
        missing_values=HEART_SCHEMA.missing_values,
    )
    frames = heart_training_frames()
    fit = PipelineFit(standard_pipeline(undeclared))
    counts: dict[str, Mapping[str, int]] = {}
    while (request := fit.request()) is not None:
        merged = merge_answers([answer_request(f, request) for f in frames])
        fit.receive(merged)
        counts.update({c: s.counts for c, s in merged.items() if not isinstance(s, NumericStats)})
    vocabularies = fit.result().params[2]
    pooled = undeclared.coerce(pd.concat(frames))
    for column in undeclared.categorical:
        assert vocabularies[column] == sorted(pooled[column].dropna().unique().tolist())
        assert dict(counts[column]) == pooled[column].value_counts().sort_index().to_dict()


def test_a_deployed_fit_over_json_equals_the_in_process_fit() -> None:
    frames = heart_training_frames(seed=3)
    pipeline = standard_pipeline(HEART_SCHEMA)
    fit = PipelineFit(pipeline)
    while (request := fit.request()) is not None:
        wire = json.loads(json.dumps(request.to_dict()))
        answers = [
            answers_from_dict(
                json.loads(
                    json.dumps({c: s.to_dict() for c, s in answer_request(f, StatsRequest.from_dict(wire)).items()})
                )
            )
            for f in frames
        ]
        fit.receive(merge_answers(answers))
    remote = fit.result()
    assert remote == fit_federated(pipeline, frames)
    assert fit.passes == 4  # median: range + histogram; scale: range + centred sums


def test_the_fitted_pipeline_round_trips_through_json_and_transforms_identically() -> None:
    frames = heart_training_frames()
    fitted = fit_federated(standard_pipeline(HEART_SCHEMA), frames)
    again = FittedPipeline.from_dict(json.loads(json.dumps(fitted.to_dict())))
    assert again == fitted
    np.testing.assert_array_equal(again.transform(frames[2]), fitted.transform(frames[2]))
    assert fitted.feature_names == HEART_SCHEMA.feature_names


def test_the_hook_sees_every_merged_answer_and_can_perturb_it() -> None:
    frames = heart_training_frames()
    seen: list[set[str]] = []

    def shift_counts(merged: Mapping[str, ColumnStats]) -> Mapping[str, ColumnStats]:
        seen.append(set(merged))
        return {c: s.with_additive(s.additive() + 5.0) if isinstance(s, NumericStats) else s for c, s in merged.items()}

    plain = fit_federated(standard_pipeline(HEART_SCHEMA), frames)
    noisy = fit_federated(standard_pipeline(HEART_SCHEMA), frames, hook=shift_counts)
    assert len(seen) == 4 and seen[0] == set(HEART_SCHEMA.numeric)
    assert noisy.params[1]["age"]["mean"] != plain.params[1]["age"]["mean"]


def frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "x": [1.0, 2.0, 3.0, 4.0, 100.0, None],
            "y": [5.0, 5.0, 6.0, 7.0, 8.0, 9.0],
            "c": ["b", "a", "b", None, "c", "b"],
        }
    )


SCHEMA = TabularSchema(numeric=("x", "y"), categorical={"c": ()})


def test_every_step_does_what_it_says() -> None:
    pipeline = Pipeline(
        SCHEMA,
        (
            Impute(("x",), "mean"),
            Impute(("c",), "most_frequent"),
            Clip(("x",), upper_quantile=0.8),
            MinMaxScale(("y",), low=-1.0, high=1.0),
            StandardScale(("x",)),
            OneHot(("c",), min_count=2),
        ),
        bins=4096,
    )
    fitted = pipeline.fit(frame())
    mean_x = (1 + 2 + 3 + 4 + 100) / 5
    assert fitted.params[0] == {"x": pytest.approx(mean_x)}
    assert fitted.params[1] == {"c": "b"}
    upper = fitted.params[2]["x"][1]
    exact = float(np.quantile([1, 2, 3, 4, 100, mean_x], 0.8))
    assert fitted.params[2]["x"][0] is None and abs(upper - exact) <= 99 / 4096
    assert fitted.params[3] == {"y": {"min": 5.0, "max": 9.0}}
    assert fitted.params[5] == {"c": ["b"]}  # "a" and "c" appear once: below min_count
    out = fitted.transform_frame(frame())
    assert out.columns.tolist() == ["x", "y", "c=b"]
    assert out["y"].tolist() == [-1.0, -1.0, -0.5, 0.0, 0.5, 1.0]
    assert out["c=b"].tolist() == [1.0, 0.0, 1.0, 1.0, 0.0, 1.0]  # the missing c was imputed with "b"
    clipped = np.minimum([1, 2, 3, 4, 100, mean_x], upper)
    np.testing.assert_allclose(out["x"], (clipped - clipped.mean()) / clipped.std(), atol=1e-9)


def test_select_ordinal_and_constant_imputation() -> None:
    pipeline = Pipeline(
        SCHEMA, (Select(("c", "y")), Impute(("c",), "constant", value="none"), Ordinal(max_categories=2))
    )
    fitted = pipeline.fit(frame())
    assert fitted.feature_names == ("c", "y")
    # the two most frequent after imputation: b (3 rows), then a tie of a, c and none (1 row) won by name
    assert fitted.params[2] == {"c": ["a", "b"]}
    assert fitted.transform(frame())[:, 0].tolist() == [1, 0, 1, -1, -1, 1]


def test_declared_categories_are_used_as_declared_without_asking_clients() -> None:
    schema = TabularSchema(categorical={"c": ("z", "b")})
    fit = PipelineFit(Pipeline(schema, (OneHot(),)))
    assert fit.request() is None
    fitted = fit.result()
    assert fitted.feature_names == ("c=z", "c=b")


@pytest.mark.parametrize(
    ("steps", "message"),
    [
        ((StandardScale(("z",)),), r"names \['z'\], which are not columns at that point"),
        ((Select(("x",)), OneHot(("c",))), r"names \['c'\], which are not columns at that point"),
        ((StandardScale(("c",)),), r"'standard_scale' works on numeric columns; 'c' is categorical"),
        ((Impute(("x",), "most_frequent"), OneHot()), r"most_frequent is for categorical columns; use median or mean"),
        ((StandardScale(),), r"categorical column\(s\) \['c'\] are never encoded; add a one_hot or ordinal step"),
    ],
)
def test_a_pipeline_that_cannot_work_is_refused_when_declared(steps: tuple[object, ...], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Pipeline(SCHEMA, steps)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: Impute(strategy="mode"), "impute strategy must be median, mean, most_frequent or constant"),
        (lambda: Impute(strategy="constant"), "'constant' needs a value"),
        (lambda: Clip(), "clip needs a bound"),
        (lambda: Clip(lower=0.0, lower_quantile=0.1), "a quantile or a fixed bound for each side, not both"),
        (lambda: Clip(upper_quantile=2.0), r"upper_quantile must be in \[0, 1\]"),
        (lambda: MinMaxScale(low=1.0, high=1.0), "needs low < high"),
        (lambda: Pipeline.from_dict({"schema": {}, "steps": [{"step": "pca"}]}), "unknown pipeline step 'pca'"),
    ],
)
def test_bad_step_settings_are_config_errors(make: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        make()  # type: ignore[operator]


def test_values_left_missing_after_the_pipeline_are_an_error_that_says_add_impute() -> None:
    fitted = Pipeline(SCHEMA, (StandardScale(), OneHot())).fit(frame())
    with pytest.raises(
        DataError, match=r"column\(s\) \['x'\] still have missing values after the pipeline; add an impute"
    ):
        fitted.transform(frame())


def test_fitting_refuses_rows_that_break_the_schema() -> None:
    with pytest.raises(SchemaError, match="client 1: data lacks the column"):
        fit_federated(standard_pipeline(SCHEMA), [frame(), frame().drop(columns=["y"])])
    with pytest.raises(DataError, match="over no clients"):
        fit_federated(standard_pipeline(SCHEMA), [])
    with pytest.raises(DataError, match="not fitted yet"):
        PipelineFit(standard_pipeline(SCHEMA)).result()


def test_local_preprocessing_of_learned_categories_is_refused_as_their_columns_would_differ() -> None:
    from sheaf.data.sources import RawDataset

    raw = load_dataset("heart")
    undeclared = TabularSchema(numeric=("age",), categorical={"cp": ()})
    custom = RawDataset(**{**raw.__dict__, "preprocessor": standard_pipeline(undeclared)})
    with pytest.raises(DataError, match=r"local preprocessing would give every client its own categories for \['cp'\]"):
        build_federation(HEART, seed=0, raw=custom)
    fed = build_federation(DataConfig(**{**HEART.__dict__, "preprocessing": "federated"}), seed=0, raw=custom)
    assert fed.info.feature_names == (
        "age",
        "cp=asymptomatic",
        "cp=atypical angina",
        "cp=non-anginal",
        "cp=typical angina",
    )


def test_federated_preprocessing_needs_a_dataset_with_a_pipeline() -> None:
    with pytest.raises(DataError, match="dataset 'digits' has no preprocessing pipeline to fit"):
        build_federation(DataConfig(preprocessing="federated"), seed=0)


def test_every_hospital_is_transformed_by_the_one_federated_pipeline() -> None:
    config = DataConfig(dataset="heart", partition="natural", clients=4, preprocessing="federated")
    fed = build_federation(config, seed=0)
    fitted = FittedPipeline.from_dict(fed.preprocessing["fitted"])
    raw = load_dataset("heart")
    rows = assign_rows(config, raw, 0)
    assert isinstance(raw.features, pd.DataFrame)
    for client in range(4):
        own = raw.features.iloc[rows.clients.client_indices(client)]
        np.testing.assert_array_equal(fitted.transform(own), fed.x[fed.offsets[client] : fed.offsets[client + 1]])
    # a federated fit is one standardisation for all: the hospitals' training rows pooled have mean 0
    train = np.concatenate([fed.client(i).train.x for i in range(4)])
    np.testing.assert_allclose(train[:, :6].mean(axis=0), 0.0, atol=1e-6)


def test_the_run_stores_the_fitted_pipeline_as_json(runs_dir: str, tmp_path: Path) -> None:
    result = simulate(
        overrides=[
            runs_dir,
            "dataset=heart",
            "partition=natural",
            "clients=4",
            "preprocessing=federated",
            "rounds=1",
            "fraction=1",
        ]
    )
    with RunStore.open(result.run_path, readonly=True) as store:
        record = store.meta["preprocessing"]
    assert record["mode"] == "federated"
    fitted = FittedPipeline.from_dict(record["fitted"])
    assert fitted.feature_names == HEART_SCHEMA.feature_names
    rebuilt = build_federation(
        DataConfig(dataset="heart", partition="natural", clients=4, preprocessing="federated"), seed=0
    )
    assert fitted == FittedPipeline.from_dict(rebuilt.preprocessing["fitted"])
