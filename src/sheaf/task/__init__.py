"""The user's learning code (Task), the ready-made TorchTask, and the client side of a round.

Torch is imported only when a torch-backed name is first used, so ``import sheaf`` and the
CLI's help stay fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sheaf.task.base import EvalResult, FitInstructions, FitResult, Task, prepare_worker
from sheaf.task.client import evaluate_client, fit_client, fit_instructions
from sheaf.task.factory import build_task, load_task

if TYPE_CHECKING:
    from sheaf.task import optim
    from sheaf.task.models import (
        MODELS,
        CharLSTM,
        build_model,
        char_lstm,
        cnn,
        logistic_regression,
        mlp,
        model_factory,
    )
    from sheaf.task.torch_task import MetricFn, OptimizerFn, TorchTask, TrainFn, accuracy

__all__ = [
    "MODELS",
    "CharLSTM",
    "EvalResult",
    "FitInstructions",
    "FitResult",
    "MetricFn",
    "OptimizerFn",
    "Task",
    "TorchTask",
    "TrainFn",
    "accuracy",
    "build_model",
    "build_task",
    "char_lstm",
    "cnn",
    "evaluate_client",
    "fit_client",
    "fit_instructions",
    "load_task",
    "logistic_regression",
    "mlp",
    "model_factory",
    "optim",
    "prepare_worker",
]

_LAZY = {
    "MODELS": "sheaf.task.models",
    "CharLSTM": "sheaf.task.models",
    "char_lstm": "sheaf.task.models",
    "cnn": "sheaf.task.models",
    "build_model": "sheaf.task.models",
    "logistic_regression": "sheaf.task.models",
    "mlp": "sheaf.task.models",
    "model_factory": "sheaf.task.models",
    "MetricFn": "sheaf.task.torch_task",
    "OptimizerFn": "sheaf.task.torch_task",
    "TorchTask": "sheaf.task.torch_task",
    "TrainFn": "sheaf.task.torch_task",
    "accuracy": "sheaf.task.torch_task",
}


def __getattr__(name: str) -> Any:
    if name == "optim":
        import importlib

        return importlib.import_module("sheaf.task.optim")
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'sheaf.task' has no attribute {name!r}")
