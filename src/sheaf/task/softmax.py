"""SoftmaxTask: multinomial logistic regression in plain NumPy, float32 — a task without torch.

A client process that runs it starts in the time NumPy takes to import (torch takes
~1.5–2 s), so it suits small tabular data, deployment smoke tests and benchmarks of the
framework itself (where training must cost little and the same every time). Each epoch is
``steps_per_epoch`` full-batch gradient steps of the mean cross-entropy with the run's
``train.lr``; the rows are put in the order the client's seed for the round draws (the
order of a float sum), so a client trains the same way wherever it runs.

Use it from a config: ``task = "sheaf.task.softmax:softmax_task"``.

References:
    Bishop. Pattern Recognition and Machine Learning, section 4.3.4 (multiclass logistic
    regression). Springer, 2006.

Example:
    >>> import numpy as np
    >>> from sheaf.core.config import TrainConfig
    >>> from sheaf.data.dataset import Split
    >>> from sheaf.task.base import FitInstructions
    >>> x = np.array([[1, 0], [0, 1], [1, 0.1], [0.1, 1]], np.float32)
    >>> data = Split(x, np.array([0, 1, 0, 1]))
    >>> task = SoftmaxTask(features=2, classes=2)
    >>> params = task.init_params(seed=0)
    >>> fitted = task.fit(params, data, FitInstructions(1, 0, TrainConfig(epochs=5, lr=1.0), seed=7))
    >>> fitted.metrics["steps"], fitted.metrics["train_loss"] < 0.69
    (15.0, True)
    >>> task.evaluate(fitted.params, data).metrics["accuracy"]
    1.0
"""

from __future__ import annotations

from typing import Any

import numpy as np

from sheaf.core.errors import ConfigError
from sheaf.core.params import Params
from sheaf.data.dataset import DatasetInfo, Split
from sheaf.task.base import EvalResult, FitInstructions, FitResult

__all__ = ["SoftmaxTask", "softmax_task"]

_Array = np.ndarray[Any, Any]


class SoftmaxTask:
    """Softmax regression ``softmax(x @ w + b)``, trained by full-batch gradient descent.

    Args:
        features: the number of input features (``x`` is flattened to them).
        classes: the number of classes.
        steps_per_epoch: gradient steps per epoch of ``train.epochs``.

    Raises:
        ConfigError: if a size is below 1.

    Fit reports ``train_loss`` (the mean cross-entropy before the last step) and ``steps``.
    """

    def __init__(self, features: int, classes: int, steps_per_epoch: int = 3) -> None:
        if features < 1 or classes < 1 or steps_per_epoch < 1:
            raise ConfigError(
                f"SoftmaxTask needs features, classes and steps_per_epoch >= 1, got {features}, {classes}, "
                f"{steps_per_epoch}"
            )
        self.features, self.classes, self.steps_per_epoch = features, classes, steps_per_epoch

    def init_params(self, seed: int) -> Params:
        """Small random weights (scale 0.01) drawn from ``seed``, zero biases; float32."""
        rng = np.random.default_rng(seed)
        return Params({"w": (0.01 * rng.standard_normal((self.features, self.classes))).astype(np.float32),
                       "b": np.zeros(self.classes, np.float32)})  # fmt: skip

    def _probs(self, w: _Array, b: _Array, x: _Array) -> _Array:
        logits = x.reshape(len(x), -1) @ w + b
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
        probs: _Array = e / e.sum(axis=1, keepdims=True)
        return probs

    def fit(self, params: Params, data: Split, instructions: FitInstructions) -> FitResult:
        """``train.epochs * steps_per_epoch`` gradient steps from ``params`` on ``data``."""
        w, b = params["w"].copy(), params["b"].copy()
        onehot = np.eye(self.classes, dtype=np.float32)[data.y]
        order = np.random.default_rng(instructions.seed).permutation(len(data))
        x, onehot = data.x[order].reshape(len(data), -1), onehot[order]
        steps, loss = instructions.train.epochs * self.steps_per_epoch, float("nan")
        lr = np.float32(instructions.train.lr)
        for _ in range(steps):
            probs = self._probs(w, b, x)
            loss = float(-np.log((probs * onehot).sum(axis=1) + 1e-12).mean())
            grad = probs - onehot
            w -= lr * (x.T @ grad) / len(data)
            b -= lr * grad.mean(axis=0)
        return FitResult(Params({"w": w, "b": b}), len(data), {"train_loss": loss, "steps": float(steps)})

    def evaluate(self, params: Params, data: Split) -> EvalResult:
        """Mean cross-entropy and ``accuracy`` of ``params`` on ``data``."""
        probs = self._probs(params["w"], params["b"], data.x)
        loss = float(-np.log(probs[np.arange(len(data)), data.y] + 1e-12).mean())
        return EvalResult(loss, len(data), {"accuracy": float((probs.argmax(1) == data.y).mean())})


def softmax_task(info: DatasetInfo) -> SoftmaxTask:
    """The task factory a config names (``task = "sheaf.task.softmax:softmax_task"``): sized
    from the dataset's features and classes."""
    return SoftmaxTask(info.num_features, info.num_classes)
