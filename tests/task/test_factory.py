from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from sheaf.core.config import RunConfig
from sheaf.core.errors import ConfigError, TaskError
from sheaf.data.dataset import DatasetInfo
from sheaf.task.base import Task
from sheaf.task.factory import build_task, load_task

INFO = DatasetInfo("toy", (3,), 2, ("a", "b"))

MODULE = textwrap.dedent(
    """
    import numpy as np
    from sheaf.core.params import Params
    from sheaf.task.base import EvalResult, FitResult

    class MeanTask:
        def __init__(self, width=3):
            self.width = width
        def init_params(self, seed):
            return Params({"w": np.zeros(self.width)})
        def fit(self, params, data, instructions):
            return FitResult(Params({"w": data.x.mean(axis=0)}), len(data))
        def evaluate(self, params, data):
            return EvalResult(0.0, len(data))

    task = MeanTask()

    def make(info):
        return MeanTask(info.input_shape[0])

    not_a_task = 42
    """
)


@pytest.fixture
def user_module(tmp_path: Path) -> Iterator[str]:
    (tmp_path / "user_tasks.py").write_text(MODULE)
    sys.path.insert(0, str(tmp_path))
    yield "user_tasks"
    sys.path.remove(str(tmp_path))
    sys.modules.pop("user_tasks", None)


def test_a_task_object_a_class_or_a_factory_can_be_named(user_module: str) -> None:
    for attr in ("task", "MeanTask", "make"):
        task = load_task(f"{user_module}:{attr}", INFO)
        assert isinstance(task, Task)
        assert task.init_params(0)["w"].shape == (3,)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("no_colon", "must look like 'package.module:attr'"),
        ("missing_module_xyz:task", "cannot import task module 'missing_module_xyz'"),
        ("user_tasks:nope", "has no attribute 'nope'"),
        ("user_tasks:not_a_task", "is not a Task"),
    ],
)
def test_bad_task_specs_say_what_is_wrong(user_module: str, spec: str, message: str) -> None:
    with pytest.raises(TaskError, match=message):
        load_task(spec, INFO)


def test_the_built_in_model_is_used_without_a_task_setting() -> None:
    task = build_task(RunConfig(), INFO)
    assert set(task.init_params(0)) == {"1.weight", "1.bias", "3.weight", "3.bias"}


def test_an_unknown_model_names_the_valid_ones() -> None:
    from sheaf.core.config import ModelConfig

    with pytest.raises(
        ConfigError, match="unknown model 'resnet'; choose one of: mlp, logreg, cnn, cnn_wide, char_lstm, leaf_lstm"
    ):
        build_task(RunConfig(model=ModelConfig(name="resnet")), INFO)
