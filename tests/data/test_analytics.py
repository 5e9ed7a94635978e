"""Federated analytics: per-client figures from statistics equal those computed on each client's rows."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from sheaf.cli._analyze import sparkline
from sheaf.cli.app import app
from sheaf.core.config import DataConfig
from sheaf.core.errors import DataError
from sheaf.data.analytics import profile_clients, profile_dataset
from sheaf.data.catalog import assign_rows, load_dataset
from sheaf.data.sources import HEART_SCHEMA

HEART = DataConfig(dataset="heart", partition="natural", clients=4)


def heart_frames() -> list[pd.DataFrame]:
    raw = load_dataset("heart")
    rows = assign_rows(HEART, raw, 0)
    assert isinstance(raw.features, pd.DataFrame)
    return [HEART_SCHEMA.coerce(raw.features.iloc[rows.clients.client_indices(i)]) for i in range(4)]


def test_per_client_figures_equal_those_of_each_clients_own_rows() -> None:
    profile = profile_dataset(HEART, seed=0)
    frames = heart_frames()
    assert profile.names == ("Cleveland", "Hungary", "Switzerland", "VA Long Beach")
    age = profile.column("age").client_table()
    np.testing.assert_allclose(age["mean"], [f["age"].mean() for f in frames], rtol=1e-12)
    np.testing.assert_allclose(age["std"], [f["age"].std(ddof=0) for f in frames], rtol=1e-9)
    chol = profile.column("chol").client_table()
    assert chol["missing"].tolist() == pytest.approx([f["chol"].isna().mean() for f in frames])
    assert chol["missing"][2] == 1.0  # Switzerland records no cholesterol (0 means missing)
    # every client's histogram uses the same global bins and counts its observed values
    assert [sum(h) for h in chol["histogram"]] == [int(f["chol"].notna().sum()) for f in frames]
    assert len({len(h) for h in chol["histogram"]}) == 1


def test_heterogeneity_is_the_between_client_share_of_variance() -> None:
    frames = heart_frames()
    pooled = pd.concat(frames)["thalch"].dropna()
    means = [f["thalch"].dropna() for f in frames]
    between = sum(len(m) * (m.mean() - pooled.mean()) ** 2 for m in means)
    expected = between / (len(pooled) * pooled.var(ddof=0))
    assert profile_dataset(HEART, seed=0).column("thalch").heterogeneity == pytest.approx(expected, rel=1e-9)


def test_categorical_heterogeneity_is_the_mean_total_variation_distance() -> None:
    a = pd.DataFrame({"c": ["x"] * 3})
    b = pd.DataFrame({"c": ["y"] * 3})
    c = pd.DataFrame({"c": ["x", "y", "x", "y"]})
    assert profile_clients([a, a], {"c": "categorical"}).column("c").heterogeneity == 0.0
    assert profile_clients([a, b], {"c": "categorical"}).column("c").heterogeneity == pytest.approx(0.5)
    profile = profile_clients([a, b, c], {"c": "categorical"})
    assert profile.column("c").distances() == pytest.approx([0.5, 0.5, 0.0])


def test_label_skew_of_a_dirichlet_partition_shows_and_iid_does_not() -> None:
    skewed = profile_dataset(DataConfig(alpha=0.1), seed=0).column("label").heterogeneity
    iid = profile_dataset(DataConfig(partition="iid"), seed=0).column("label").heterogeneity
    assert skewed > 0.5 > 0.2 > iid


def test_array_datasets_profile_the_label_and_the_mean_feature_value() -> None:
    profile = profile_dataset(DataConfig(clients=5, partition="iid"), seed=0)
    assert [p.column for p in profile.columns] == ["feature mean", "label"]
    assert profile.problems == ()


def test_schema_problems_of_a_client_are_reported_not_raised() -> None:
    good = pd.DataFrame({"x": [1.0]})
    profile = profile_clients([good, good], {"x": "numeric"}, problems=[(), ()])
    assert profile.to_dict()["schema_problems"] == {}
    with pytest.raises(DataError, match="no column 'y' was analysed; columns: x"):
        profile.column("y")


def test_sparkline_scales_to_the_largest_bin() -> None:
    assert sparkline([0, 1, 2, 4]) == " ▃▅█"
    assert sparkline([0, 0]) == ""


runner = CliRunner()


def test_sheaf_analyze_prints_every_column_and_every_client() -> None:
    result = runner.invoke(
        app, ["analyze", "--set", "dataset=heart", "--set", "partition=natural", "--set", "clients=4"]
    )
    assert result.exit_code == 0, result.output
    for word in ("heart: 4 clients", "chol", "thal", "label", "Switzerland", "heterogeneity"):
        assert word in result.stdout


def test_sheaf_analyze_json_is_strict_json_with_every_client() -> None:
    args = ["analyze", "--json", "--set", "dataset=heart", "--set", "partition=natural", "--set", "clients=4"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    profile = json.loads(result.stdout)
    chol = next(c for c in profile["columns"] if c["column"] == "chol")
    assert chol["clients"]["Switzerland"]["count"] == 0
    assert chol["clients"]["Switzerland"]["min"] is None


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--column", "nope", "--set", "dataset=heart", "--set", "partition=natural", "--set", "clients=4"],
            "no column 'nope'",
        ),
        (["--bins", "0"], "--bins must be >= 1, got 0"),
        (["--set", "partition=natural"], "dataset 'digits' has no natural partition"),
    ],
)
def test_sheaf_analyze_bad_input_is_one_line(args: list[str], message: str) -> None:
    result = runner.invoke(app, ["analyze", *args])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0]
