"""Built-in models and the task the CLI builds from a run config.

- ``mlp``: a multi-layer perceptron over the flattened input.
- ``logreg``: multinomial logistic regression.
- ``cnn``: the small CNN of FedAvg-style image benchmarks: two 5x5 convolutions (16 and
  32 channels, "same" padding), each followed by ReLU and 2x2 max-pooling, then one linear
  layer; for (channels, height, width) inputs such as Fashion-MNIST's (1, 28, 28).
- ``cnn_wide``: a wider CNN that is still cheap: two 3x3 convolutions (32 and 64 channels,
  "same" padding), each followed by ReLU and 2x2 max-pooling, then a hidden layer of
  ``model.hidden[0]`` units with ReLU and the output layer (with ``hidden = [128]``, 421,642
  parameters on 28x28 images; about 1.5 times ``cnn``'s multiply-adds per image).
- ``char_lstm``: next-character prediction as in LEAF's Shakespeare: an 8-dimensional
  character embedding, LSTM layers of the ``hidden`` widths, a linear layer on the last
  step's output; the input is a window of character indices (the classes).
- ``leaf_lstm``: LEAF's Shakespeare model exactly: ``char_lstm`` with an 8-dimensional
  embedding and two LSTM layers of 256 (``model.hidden`` is ignored); 819,920 parameters with the 80-character alphabet
  over LEAF's 80 characters.

Example:
    >>> from sheaf.core.config import ModelConfig
    >>> model = build_model(ModelConfig(name="mlp", hidden=(32,)), input_dim=64, num_classes=10)
    >>> [tuple(p.shape) for p in model.parameters()]
    [(32, 64), (32,), (10, 32), (10,)]
"""

from __future__ import annotations

from functools import partial

import numpy as np
import torch
from torch import nn

from sheaf.core.config import ModelConfig
from sheaf.core.errors import ConfigError

__all__ = [
    "MODELS",
    "CharLSTM",
    "build_model",
    "char_lstm",
    "cnn",
    "cnn_wide",
    "leaf_lstm",
    "logistic_regression",
    "mlp",
    "model_factory",
]

#: Names accepted by ``model.name``.
MODELS = ("mlp", "logreg", "cnn", "cnn_wide", "char_lstm", "leaf_lstm")

#: The LSTM layers of LEAF's Shakespeare model (Caldas et al. 2018): two of 256 units.
LEAF_HIDDEN = (256, 256)


def mlp(input_dim: int, hidden: tuple[int, ...], num_classes: int) -> nn.Module:
    """A multi-layer perceptron with ReLU between layers (flattens its input)."""
    layers: list[nn.Module] = [nn.Flatten()]
    width = input_dim
    for size in hidden:
        layers += [nn.Linear(width, size), nn.ReLU()]
        width = size
    layers.append(nn.Linear(width, num_classes))
    return nn.Sequential(*layers)


def logistic_regression(input_dim: int, num_classes: int) -> nn.Module:
    """Multinomial logistic regression: one linear layer (softmax is in the loss)."""
    return nn.Sequential(nn.Flatten(), nn.Linear(input_dim, num_classes))


def cnn(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """Two 5x5 convolutions (16, 32 channels) with ReLU and 2x2 max-pooling, then a linear layer.

    Raises:
        ConfigError: if the input is not (channels, height, width) of at least 4x4.
    """
    if len(input_shape) != 3 or min(input_shape[1:]) < 4:
        raise ConfigError(
            f"model cnn needs image inputs (channels, height, width) of at least 4x4, got shape {input_shape}"
        )
    channels, height, width = input_shape
    return nn.Sequential(
        nn.Conv2d(channels, 16, kernel_size=5, padding=2),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 32, kernel_size=5, padding=2),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(32 * (height // 4) * (width // 4), num_classes),
    )


def cnn_wide(input_shape: tuple[int, ...], num_classes: int, hidden: int = 128) -> nn.Module:
    """Two 3x3 convolutions (32, 64 channels) with ReLU and 2x2 max-pooling, a hidden layer, the output.

    Raises:
        ConfigError: if the input is not (channels, height, width) of at least 4x4.
    """
    if len(input_shape) != 3 or min(input_shape[1:]) < 4:
        raise ConfigError(
            f"model cnn_wide needs image inputs (channels, height, width) of at least 4x4, got shape {input_shape}"
        )
    channels, height, width = input_shape
    return nn.Sequential(
        nn.Conv2d(channels, 32, kernel_size=3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 64, kernel_size=3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(64 * (height // 4) * (width // 4), hidden),
        nn.ReLU(),
        nn.Linear(hidden, num_classes),
    )


class CharLSTM(nn.Module):
    """Character indices in, scores for the next character out (LEAF's Shakespeare model, smaller).

    Args:
        num_classes: the alphabet size (inputs and outputs share it).
        hidden: the LSTM layers' widths (all layers take the first width).
        embedding: the character embedding's size (LEAF: 8).

    References:
        Caldas et al. LEAF: A Benchmark for Federated Settings. arXiv:1812.01097, 2018.
    """

    def __init__(self, num_classes: int, hidden: tuple[int, ...] = (64,), embedding: int = 8) -> None:
        super().__init__()
        if not hidden:
            raise ConfigError("model char_lstm needs at least one LSTM width in model.hidden")
        self.embed = nn.Embedding(num_classes, embedding)
        self.lstm = nn.LSTM(embedding, hidden[0], num_layers=len(hidden), batch_first=True)
        self.out = nn.Linear(hidden[0], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Scores (batch, classes) for the character after each window (batch, length)."""
        states, _ = self.lstm(self.embed(x.long()))
        scores: torch.Tensor = self.out(states[:, -1])
        return scores


def char_lstm(num_classes: int, hidden: tuple[int, ...] = (64,)) -> nn.Module:
    """A :class:`CharLSTM` over ``num_classes`` characters."""
    return CharLSTM(num_classes, hidden)


def leaf_lstm(num_classes: int) -> nn.Module:
    """LEAF's Shakespeare model: embedding 8, two LSTM layers of 256, a linear layer.

    Example:
        >>> sum(p.numel() for p in leaf_lstm(80).parameters())
        819920

    References:
        Caldas et al. LEAF: A Benchmark for Federated Settings. arXiv:1812.01097, 2018.
    """
    return CharLSTM(num_classes, LEAF_HIDDEN)


def build_model(
    config: ModelConfig, input_dim: int, num_classes: int, input_shape: tuple[int, ...] = (), *, input_dtype: str = ""
) -> nn.Module:
    """Build a built-in model by name.

    Raises:
        ConfigError: if the name is not one of :data:`MODELS`, or the input does not suit it.
    """
    return model_factory(config, input_dim, num_classes, input_shape, input_dtype=input_dtype)()


def model_factory(
    config: ModelConfig, input_dim: int, num_classes: int, input_shape: tuple[int, ...] = (), *, input_dtype: str = ""
) -> partial[nn.Module]:
    """A picklable zero-argument factory for the configured model.

    Args:
        config: the model section of the run config.
        input_dim: scalars per sample.
        num_classes: output classes.
        input_shape: one sample's shape (``cnn`` needs it; default ``(input_dim,)``).
        input_dtype: the features' dtype name, if known: integer features are character
            indices for ``char_lstm``, float features numbers for the other models.

    Raises:
        ConfigError: if the name is unknown or the input does not suit the model.
    """
    if input_dtype and config.name in MODELS:
        indices = np.dtype(input_dtype).kind in "iu"
        characters = config.name in ("char_lstm", "leaf_lstm")
        if indices and not characters:
            raise ConfigError(
                f"model {config.name} needs numeric features, but the data are {input_dtype} indices "
                "(e.g. characters); use model.name=char_lstm or leaf_lstm"
            )
        if not indices and characters:
            raise ConfigError(f"model {config.name} needs integer character indices, but the data are {input_dtype}")
    if config.name == "mlp":
        return partial(mlp, input_dim, tuple(config.hidden), num_classes)
    if config.name == "logreg":
        return partial(logistic_regression, input_dim, num_classes)
    if config.name == "cnn":
        shape = tuple(input_shape) or (input_dim,)
        cnn(shape, num_classes)  # check the shape now, where the error names the setting
        return partial(cnn, shape, num_classes)
    if config.name == "cnn_wide":
        shape = tuple(input_shape) or (input_dim,)
        width = config.hidden[0] if config.hidden else 128
        cnn_wide(shape, num_classes, width)  # check the shape now, where the error names the setting
        return partial(cnn_wide, shape, num_classes, width)
    if config.name == "char_lstm":
        return partial(char_lstm, num_classes, tuple(config.hidden))
    if config.name == "leaf_lstm":
        return partial(leaf_lstm, num_classes)
    raise ConfigError(f"unknown model {config.name!r}; choose one of: {', '.join(MODELS)}")
