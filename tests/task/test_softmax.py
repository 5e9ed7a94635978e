"""sheaf's NumPy softmax task: it learns, it trains the same way from the same seed, its
train_loss is the real loss, and a config can name it."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sheaf.core.config import TrainConfig
from sheaf.core.errors import ConfigError
from sheaf.data.dataset import DatasetInfo, Split
from sheaf.task.base import FitInstructions, Task
from sheaf.task.factory import load_task
from sheaf.task.softmax import SoftmaxTask

FEATURES, CLASSES = 4, 3


def blobs(seed: int, rows: int = 60) -> Split:
    """Three separable clusters in four features."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, CLASSES, rows)
    centres = 3.0 * np.eye(CLASSES, FEATURES, dtype=np.float32)
    return Split((centres[y] + 0.3 * rng.standard_normal((rows, FEATURES))).astype(np.float32), y)


def instructions(seed: int, epochs: int = 1, lr: float = 0.5) -> FitInstructions:
    return FitInstructions(1, 0, TrainConfig(epochs=epochs, lr=lr), seed=seed)


@settings(max_examples=20, deadline=None)
@given(data_seed=st.integers(0, 2**16), init_seed=st.integers(0, 2**16), fit_seed=st.integers(0, 2**16))
def test_training_lowers_the_loss_and_the_same_seeds_give_the_same_bits(
    data_seed: int, init_seed: int, fit_seed: int
) -> None:
    task, data = SoftmaxTask(FEATURES, CLASSES), blobs(data_seed)
    params = task.init_params(init_seed)

    first = task.fit(params, data, instructions(fit_seed, epochs=4))
    again = task.fit(task.init_params(init_seed), data, instructions(fit_seed, epochs=4))

    assert first.params.array_equal(again.params) and first.metrics == again.metrics
    assert task.evaluate(first.params, data).loss < task.evaluate(params, data).loss
    assert first.metrics["steps"] == 12.0 and first.num_examples == len(data)
    assert all(a.dtype == np.float32 for a in first.params.values())


def test_train_loss_is_the_loss_of_the_model_before_the_last_step() -> None:
    task, data = SoftmaxTask(FEATURES, CLASSES, steps_per_epoch=2), blobs(0)
    params = task.init_params(0)
    one_step = SoftmaxTask(FEATURES, CLASSES, steps_per_epoch=1).fit(params, data, instructions(5))

    two_steps = task.fit(params, data, instructions(5))

    assert two_steps.metrics["train_loss"] == pytest.approx(task.evaluate(one_step.params, data).loss, rel=1e-5)


def test_a_config_names_it_and_it_is_sized_from_the_dataset() -> None:
    info = DatasetInfo("blobs", (FEATURES,), CLASSES, ("a", "b", "c"))
    task = load_task("sheaf.task.softmax:softmax_task", info)
    assert isinstance(task, Task) and isinstance(task, SoftmaxTask)
    assert task.init_params(0)["w"].shape == (FEATURES, CLASSES)


@pytest.mark.parametrize("sizes", [(0, 3, 1), (4, 0, 1), (4, 3, 0)])
def test_sizes_below_one_are_refused_in_one_line(sizes: tuple[int, int, int]) -> None:
    with pytest.raises(ConfigError, match="SoftmaxTask needs features, classes and steps_per_epoch >= 1"):
        SoftmaxTask(*sizes)
