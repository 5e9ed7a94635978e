"""Forward FLOPs per sample of a TorchTask's model: what ``auto`` and ``vectorized`` weigh.

torch's ``FlopCounterMode`` counts any model, but its first use imports ``torch._dynamo``
(about 2 s, in the run's start-up). Models built only from torch's standard layers — all of
sheaf's built-in models — are counted here instead with forward hooks, by the same
formulas (matrix products and convolutions, 2 FLOPs per multiply-add; activations,
pooling and bias additions count nothing, as there); anything else (a custom module,
which may compute on its own, an LSTM, attention) goes to ``FlopCounterMode``.
``tests/backends/test_auto.py`` checks that both count the built-in models alike.

Example:
    >>> import numpy as np
    >>> from torch import nn
    >>> class Task:
    ...     model = nn.Sequential(nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10))
    >>> forward_flops(Task(), np.zeros((1, 64), np.float32))
    2368
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = ["forward_flops"]

#: Layers that compute nothing FlopCounterMode counts (it counts products and convolutions).
_FREE: tuple[type[nn.Module], ...] = (
    nn.Sequential,
    nn.Identity,
    nn.Flatten,
    nn.Unflatten,
    nn.ReLU,
    nn.LeakyReLU,
    nn.ReLU6,
    nn.ELU,
    nn.GELU,
    nn.SiLU,
    nn.Tanh,
    nn.Sigmoid,
    nn.Softmax,
    nn.LogSoftmax,
    nn.Dropout,
    nn.Dropout1d,
    nn.Dropout2d,
    nn.MaxPool1d,
    nn.MaxPool2d,
    nn.MaxPool3d,
    nn.AvgPool1d,
    nn.AvgPool2d,
    nn.AvgPool3d,
    nn.AdaptiveAvgPool1d,
    nn.AdaptiveAvgPool2d,
)
_COUNTED = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def _hooked(model: nn.Module, sample: torch.Tensor) -> int:
    total = 0

    def count(module: nn.Module, inputs: Any, output: torch.Tensor) -> None:
        nonlocal total
        if isinstance(module, nn.Linear):
            rows = math.prod(output.shape[:-1])
            total += 2 * rows * module.in_features * module.out_features
        else:  # a convolution: per output element, (in channels / groups) x kernel products
            conv: Any = module
            per_output = (conv.in_channels // conv.groups) * math.prod(conv.kernel_size)
            total += 2 * output.numel() * per_output

    handles = [m.register_forward_hook(count) for m in model.modules() if isinstance(m, _COUNTED)]
    try:
        with torch.no_grad():
            model(sample)
    finally:
        for handle in handles:
            handle.remove()
    return total


def forward_flops(task: Any, sample: np.ndarray[Any, Any]) -> int:
    """Floating-point operations of one sample's forward pass of a TorchTask's model."""
    model: nn.Module = task.model
    device = next(iter(model.parameters()), torch.empty(0)).device
    first = torch.from_numpy(np.array(sample[:1])).to(device)
    if all(type(m) in _FREE or type(m) in _COUNTED for m in model.modules()):
        return _hooked(model, first)
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(first)
    return int(counter.get_total_flops())
