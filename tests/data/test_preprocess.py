from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from sheaf.core.errors import SchemaError
from sheaf.data.preprocess import TabularPreprocessor
from sheaf.data.schema import TabularSchema

SCHEMA = TabularSchema(
    numeric=("x", "y"),
    categorical={"colour": ("blue", "red")},
    missing_values={"y": (0,)},
)


def test_imputes_scales_and_one_hot_encodes() -> None:
    frame = pd.DataFrame(
        {"x": [1.0, 2.0, np.nan, 5.0], "y": [10.0, 0.0, 30.0, 20.0], "colour": ["red", "blue", None, "red"]}
    )
    fitted = TabularPreprocessor(SCHEMA).fit(frame)
    out = fitted.transform(frame)
    assert out.shape == (4, 4)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out[:, :2].mean(axis=0), 0, atol=1e-6)
    medians = fitted.params[0]
    # x's missing value is imputed with the median of 1, 2, 5; y's 0 means "missing" and is
    # imputed with the median of 10, 30, 20 (each within one of 1024 bins of its range)
    assert medians["x"] == pytest.approx(2.0, abs=4 / 1024)
    assert medians["y"] == pytest.approx(20.0, abs=20 / 1024)
    # a missing colour encodes as all zeros
    assert out[:, 2:].tolist() == [[0, 1], [1, 0], [0, 0], [0, 1]]


def test_a_column_a_client_never_observed_becomes_zero() -> None:
    frame = pd.DataFrame({"x": [1.0, 3.0], "y": [np.nan, np.nan], "colour": ["red", "red"]})
    out = TabularPreprocessor(SCHEMA).fit(frame).transform(frame)
    assert np.isfinite(out).all()
    assert out[:, 1].tolist() == [0.0, 0.0]


def test_statistics_come_from_the_fitting_rows_only() -> None:
    train = pd.DataFrame({"x": [0.0, 2.0], "y": [1.0, 1.0], "colour": ["red", "blue"]})
    test = pd.DataFrame({"x": [100.0], "y": [1.0], "colour": ["red"]})
    out = TabularPreprocessor(SCHEMA).fit(train).transform(test)
    assert out[0, 0] == pytest.approx(99.0)


def test_a_missing_column_is_a_clear_error() -> None:
    with pytest.raises(SchemaError, match=r"lacks the column\(s\) \['colour'\]"):
        TabularPreprocessor(SCHEMA).fit(pd.DataFrame({"x": [1.0], "y": [1.0]}))


def test_feature_names_follow_the_output_columns() -> None:
    frame = pd.DataFrame({"x": [1.0], "y": [1.0], "colour": ["red"]})
    assert SCHEMA.feature_names == ("x", "y", "colour=blue", "colour=red")
    assert TabularPreprocessor(SCHEMA).fit(frame).feature_names == SCHEMA.feature_names
