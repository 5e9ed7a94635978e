"""The built-in cnn, cnn_wide, char_lstm and leaf_lstm models: shapes, input checks, and training through TorchTask."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sheaf.core.config import ModelConfig, RunConfig, TrainConfig
from sheaf.core.errors import ConfigError
from sheaf.data.dataset import DatasetInfo, Split
from sheaf.task.base import FitInstructions
from sheaf.task.factory import build_task
from sheaf.task.models import build_model


def test_the_cnn_is_two_5x5_convolutions_of_16_and_32_channels_then_a_linear_layer() -> None:
    model = build_model(ModelConfig(name="cnn"), 784, 10, (1, 28, 28))
    shapes = [tuple(p.shape) for p in model.parameters()]
    assert shapes == [(16, 1, 5, 5), (16,), (32, 16, 5, 5), (32,), (10, 32 * 7 * 7), (10,)]
    assert model(torch.zeros(3, 1, 28, 28)).shape == (3, 10)


def test_cnn_wide_is_two_3x3_convolutions_of_32_and_64_channels_then_a_hidden_layer() -> None:
    model = build_model(ModelConfig(name="cnn_wide", hidden=(128,)), 784, 10, (1, 28, 28))
    shapes = [tuple(p.shape) for p in model.parameters()]
    assert shapes == [(32, 1, 3, 3), (32,), (64, 32, 3, 3), (64,), (128, 64 * 7 * 7), (128,), (10, 128), (10,)]
    assert model(torch.zeros(3, 1, 28, 28)).shape == (3, 10)
    with pytest.raises(ConfigError, match=r"model cnn_wide needs image inputs .* got shape \(64,\)"):
        build_model(ModelConfig(name="cnn_wide"), 64, 10, (64,))


def test_the_cnn_refuses_flat_inputs_naming_the_shape() -> None:
    with pytest.raises(
        ConfigError, match=r"model cnn needs image inputs \(channels, height, width\) .* got shape \(64,\)"
    ):
        build_task(RunConfig(model=ModelConfig(name="cnn")), DatasetInfo("digits", (64,), 10, tuple("0123456789")))


def test_char_lstm_reads_character_indices_and_scores_the_next_character() -> None:
    model = build_model(ModelConfig(name="char_lstm", hidden=(32, 32)), 80, 80, (80,))
    assert model.lstm.num_layers == 2 and model.embed.embedding_dim == 8  # type: ignore[union-attr]
    out = model(torch.randint(0, 80, (4, 80), dtype=torch.uint8))
    assert out.shape == (4, 80)


def test_leaf_lstm_is_leafs_shakespeare_model_whatever_model_hidden_says() -> None:
    model = build_model(ModelConfig(name="leaf_lstm", hidden=(7,)), 80, 80, (80,), input_dtype="uint8")
    lstm = model.lstm  # type: ignore[union-attr]
    assert (lstm.num_layers, lstm.hidden_size, model.embed.embedding_dim) == (2, 256, 8)  # type: ignore[union-attr]
    assert model(torch.randint(0, 80, (3, 80), dtype=torch.uint8)).shape == (3, 80)
    with pytest.raises(ConfigError, match="model leaf_lstm needs integer character indices, but the data are float32"):
        build_model(ModelConfig(name="leaf_lstm"), 80, 80, (80,), input_dtype="float32")


def test_char_lstm_learns_a_repeating_text_through_torchtask() -> None:
    text = np.frombuffer(b"abcd" * 200, dtype=np.uint8) - ord("a")
    windows = np.lib.stride_tricks.sliding_window_view(text, 8)[:-1].copy()
    data = Split(windows, text[8:].astype(np.int64))
    info = DatasetInfo("toy", (8,), 4, tuple("abcd"))
    task = build_task(RunConfig(model=ModelConfig(name="char_lstm", hidden=(16,))), info)
    params = task.init_params(0)
    before = task.evaluate(params, data).metrics["accuracy"]
    result = task.fit(
        params, data, FitInstructions(1, 0, TrainConfig(epochs=3, batch_size=16, lr=0.01, optimizer="adam"), 0)
    )
    after = task.evaluate(result.params, data).metrics["accuracy"]
    assert after == 1.0 > before


@pytest.mark.parametrize(
    ("model", "dtype", "message"),
    [
        (
            "mlp",
            "uint8",
            r"model mlp needs numeric features, but the data are uint8 indices .*; use model.name=char_lstm",
        ),
        ("cnn", "int64", r"model cnn needs numeric features, but the data are int64 indices"),
        ("char_lstm", "float32", r"model char_lstm needs integer character indices, but the data are float32"),
    ],
)
def test_a_model_that_cannot_read_the_features_says_which_would(model: str, dtype: str, message: str) -> None:
    info = DatasetInfo("toy", (80,), 80, tuple(str(i) for i in range(80)), input_dtype=dtype)
    with pytest.raises(ConfigError, match=message):
        build_task(RunConfig(model=ModelConfig(name=model)), info)
