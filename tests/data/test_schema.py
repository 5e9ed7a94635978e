"""Schema checks: every way a client's rows can break the schema gets its own clear message."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from sheaf.cli.app import app
from sheaf.core.config import DataConfig
from sheaf.core.errors import ConfigError, DataError, SchemaError
from sheaf.data.catalog import build_federation, load_dataset
from sheaf.data.pipeline import standard_pipeline
from sheaf.data.schema import TabularSchema, validate_frame
from sheaf.data.sources import HEART_SCHEMA, RawDataset

SCHEMA = TabularSchema(
    numeric=("age", "chol"),
    categorical={"sex": ("F", "M"), "city": ()},
    missing_values={"chol": (0,)},
    max_missing={"chol": 0.5},
)


def good() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "age": [30, 41, 52, 63],
            "chol": [200.0, 0.0, 250.0, 180.0],
            "sex": ["F", "M", "M", None],
            "city": list("abcd"),
        }
    )


def test_conforming_rows_have_no_problems() -> None:
    assert validate_frame(SCHEMA, good()) == []
    SCHEMA.check(good())


def test_a_missing_column_names_it_and_says_what_to_do() -> None:
    with pytest.raises(
        SchemaError,
        match=r"^data lacks the column\(s\) \['chol'\] that the schema declares; add them \(empty cells count as missing\)$",
    ):
        SCHEMA.check(good().drop(columns=["chol"]))


def test_text_in_a_numeric_column_is_a_wrong_type() -> None:
    frame = good().astype({"age": object})
    frame.loc[1, "age"] = "forty"
    with pytest.raises(
        SchemaError,
        match=r"^column 'age' must be numeric but holds 1 value\(s\) that are not finite numbers, e\.g\. 'forty'; "
        r"fix them or declare 'age' categorical$",
    ):
        SCHEMA.check(frame)


def test_an_infinite_number_is_a_wrong_type_too() -> None:
    frame = good()
    frame.loc[2, "chol"] = np.inf
    [problem] = validate_frame(SCHEMA, frame)
    assert problem.kind == "wrong_type" and problem.column == "chol"


def test_a_value_outside_the_declared_categories_is_an_unseen_category() -> None:
    frame = good()
    frame.loc[0, "sex"] = "X"
    frame.loc[1, "sex"] = "X"
    with pytest.raises(
        SchemaError,
        match=r"^column 'sex' holds 'X' \(2 row\(s\)\), not among its declared categories \['F', 'M'\]; "
        r"correct the value\(s\) or declare the category$",
    ):
        SCHEMA.check(frame)


def test_undeclared_categories_accept_any_value() -> None:
    frame = good()
    frame.loc[0, "city"] = "anything"
    assert validate_frame(SCHEMA, frame) == []


def test_more_missing_values_than_allowed_counts_markers_and_blanks() -> None:
    frame = good()
    frame.loc[2, "chol"] = None  # with the 0 marker of row 1: 2 of 4 missing is the limit
    assert validate_frame(SCHEMA, frame) == []
    frame["chol"] = frame["chol"].astype(object)
    frame.loc[3, "chol"] = " "
    with pytest.raises(
        SchemaError,
        match=r"^column 'chol' is missing in 3 of 4 rows \(75%\), more than the 50% the schema allows; "
        r"fill it in or raise max_missing for 'chol'$",
    ):
        SCHEMA.check(frame)


def test_several_problems_are_one_line_naming_the_owner() -> None:
    frame = good().drop(columns=["city"])
    frame.loc[0, "sex"] = "X"
    with pytest.raises(SchemaError) as info:
        SCHEMA.check(frame, who="client 3 (Basel)")
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("client 3 (Basel): 2 schema problems: data lacks the column(s) ['city']")
    assert "column 'sex' holds 'X'" in message


def test_coerce_gives_floats_and_stripped_strings_with_missing_values_marked() -> None:
    frame = pd.DataFrame({"age": ["30", "", "4e1", None], "chol": [0, 1, 2, 3], "sex": [" F", "M ", "NA", None]})
    frame["city"] = [1, 2.5, True, "x"]
    out = SCHEMA.coerce(frame)
    assert out["age"].tolist()[0] == 30.0 and np.isnan(out["age"].tolist()[1]) and out["age"].tolist()[2] == 40.0
    assert np.isnan(out["chol"].tolist()[0])  # the declared marker
    assert out["sex"].tolist() == ["F", "M", None, None]
    assert out["city"].tolist() == ["1", "2.5", "True", "x"]


def test_the_schema_round_trips_through_json_form() -> None:
    assert TabularSchema.from_dict(SCHEMA.to_dict()) == SCHEMA
    assert TabularSchema.from_dict(HEART_SCHEMA.to_dict()) == HEART_SCHEMA


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"numeric": ("a",), "categorical": {"a": ()}}, r"declares \['a'\] as both numeric and categorical"),
        ({"numeric": ("a",), "max_missing": 1.5}, r"max_missing must be shares in \[0, 1\]"),
        ({"numeric": ("a",), "max_missing": {"b": 0.1}}, r"max_missing names undeclared column\(s\) \['b'\]"),
    ],
)
def test_a_contradictory_schema_is_a_config_error(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        TabularSchema(**kwargs)  # type: ignore[arg-type]


def heart_with_a_bad_hospital() -> RawDataset:
    raw = load_dataset("heart")
    assert isinstance(raw.features, pd.DataFrame)
    features = raw.features.copy()
    hungary = np.flatnonzero(np.asarray(raw.groups) == "Hungary")[:3]
    features.loc[hungary, "cp"] = "chest pain"
    return dataclasses.replace(raw, features=features)


@pytest.mark.parametrize("mode", ["local", "federated"])
def test_a_client_with_bad_rows_stops_the_federation_before_training_naming_it(mode: str) -> None:
    config = DataConfig(dataset="heart", partition="natural", clients=4, preprocessing=mode)
    with pytest.raises(SchemaError, match=r"^client 1 \(Hungary\): column 'cp' holds 'chest pain' \(\d row\(s\)\)"):
        build_federation(config, seed=0, raw=heart_with_a_bad_hospital())


def test_heart_conforms_to_its_schema_on_every_hospital() -> None:
    raw = load_dataset("heart")
    assert isinstance(raw.features, pd.DataFrame) and raw.groups is not None
    for hospital in raw.group_order:
        assert validate_frame(HEART_SCHEMA, raw.features[raw.groups == hospital]) == [], hospital
    assert raw.preprocessor == standard_pipeline(HEART_SCHEMA)


runner = CliRunner()


def write_hospital(path: Path, frame: pd.DataFrame) -> Path:
    frame.to_csv(path, index=False)
    return path


def cleveland() -> pd.DataFrame:
    """Cleveland's rows as its own file has them: the 13 attributes and the target ``num``."""
    raw = load_dataset("heart")
    assert isinstance(raw.features, pd.DataFrame)
    rows = raw.groups == "Cleveland"
    return raw.features[rows].assign(num=raw.labels[rows])


def test_sheaf_check_accepts_a_conforming_file(tmp_path: Path) -> None:
    path = write_hospital(tmp_path / "cleveland.csv", cleveland())
    result = runner.invoke(app, ["check", str(path), "--set", "dataset=heart"])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == f"ok: {path}: 304 rows match the heart schema (13 columns and the label)"


@pytest.mark.parametrize(
    ("label", "message"),
    [
        (None, "the data has no label column 'num'"),
        ("", "label column 'num' is blank in 1 row(s) (row 3); every row needs a label"),
        ("sick", "label column 'num' holds 1 value(s) that are not whole numbers >= 0, e.g. 'sick' (row 3)"),
        ("1.5", "label column 'num' holds 1 value(s) that are not whole numbers >= 0"),
        ("-1", "label column 'num' holds 1 value(s) that are not whole numbers >= 0"),
    ],
)
def test_sheaf_check_refuses_a_file_whose_labels_the_loader_could_not_read(
    tmp_path: Path, label: str | None, message: str
) -> None:
    frame = cleveland().astype({"num": object})
    if label is None:
        frame = frame.drop(columns=["num"])
    else:
        frame.iloc[3, frame.columns.get_loc("num")] = label
    path = write_hospital(tmp_path / "cleveland.csv", frame)

    result = runner.invoke(app, ["check", str(path), "--set", "dataset=heart"])

    assert result.exit_code == 2, result.output
    assert result.stderr.startswith(f"error: {path}: heart data: ") and message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr


def test_sheaf_check_refuses_a_broken_file_in_one_line(tmp_path: Path) -> None:
    raw = load_dataset("heart")
    assert isinstance(raw.features, pd.DataFrame)
    frame = raw.features[raw.groups == "Cleveland"].drop(columns=["thal"])
    path = write_hospital(tmp_path / "cleveland.csv", frame)
    result = runner.invoke(app, ["check", str(path), "--set", "dataset=heart"])
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        f"error: {path}: data lacks the column(s) ['thal'] that the schema declares; add them (empty cells count as missing)"
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["missing.csv", "--set", "dataset=heart"], "error: data file 'missing.csv' not found"),
        (["x.csv", "--set", "dataset=digits"], "error: dataset 'digits' has no tabular schema to check a file against"),
    ],
)
def test_sheaf_check_explains_what_it_cannot_do(args: list[str], message: str) -> None:
    result = runner.invoke(app, ["check", *args])
    assert result.exit_code == 2
    assert result.stderr.strip() == message


def test_data_error_is_the_parent_of_schema_error() -> None:
    assert issubclass(SchemaError, DataError)
