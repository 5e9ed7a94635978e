"""Built-in models and the task the CLI builds from a run config.

Example:
    >>> from sheaf.core.config import ModelConfig
    >>> model = build_model(ModelConfig(name="mlp", hidden=(32,)), input_dim=64, num_classes=10)
    >>> [tuple(p.shape) for p in model.parameters()]
    [(32, 64), (32,), (10, 32), (10,)]
"""

from __future__ import annotations

from functools import partial

from torch import nn

from sheaf.core.config import ModelConfig
from sheaf.core.errors import ConfigError

__all__ = ["MODELS", "build_model", "logistic_regression", "mlp", "model_factory"]

#: Names accepted by ``model.name``.
MODELS = ("mlp", "logreg")


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


def build_model(config: ModelConfig, input_dim: int, num_classes: int) -> nn.Module:
    """Build a built-in model by name.

    Raises:
        ConfigError: if the name is not one of :data:`MODELS`.
    """
    return model_factory(config, input_dim, num_classes)()


def model_factory(config: ModelConfig, input_dim: int, num_classes: int) -> partial[nn.Module]:
    """A picklable zero-argument factory for the configured model."""
    if config.name == "mlp":
        return partial(mlp, input_dim, tuple(config.hidden), num_classes)
    if config.name == "logreg":
        return partial(logistic_regression, input_dim, num_classes)
    raise ConfigError(f"unknown model {config.name!r}; choose one of: {', '.join(MODELS)}")
