"""The user's learning code (Task), the ready-made TorchTask and NumPy SoftmaxTask, and the
client side of a round.

Torch is imported only when a torch-backed name is first used, so ``import sheaf`` and the
CLI's help stay fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sheaf.task.attack import AttackedTask, attack_task, malicious_clients, malicious_in_round
from sheaf.task.base import EvalResult, FitInstructions, FitResult, Task, prepare_worker
from sheaf.task.client import evaluate_client, fit_client, fit_instructions
from sheaf.task.client_steps import (
    GRADIENT_CORRECTION,
    LOCAL_STEPS,
    PROXIMAL_ANCHOR,
    ClientContext,
    ClientStep,
    FitFn,
    PersonalizeFn,
    fit_with_steps,
    merged_state,
    personalizing,
    resolve_steps,
    step_names,
    steps_by_name,
)
from sheaf.task.device import DEVICE_PATTERN, cuda_count, process_device, resolve_device, use_device, worker_devices
from sheaf.task.factory import build_task, load_task
from sheaf.task.metric_log import collecting, log_metrics
from sheaf.task.softmax import SoftmaxTask, softmax_task

if TYPE_CHECKING:
    from sheaf.task import optim
    from sheaf.task.models import (
        MODELS,
        CharLSTM,
        build_model,
        char_lstm,
        cnn,
        cnn_wide,
        leaf_lstm,
        logistic_regression,
        mlp,
        model_factory,
    )
    from sheaf.task.torch_task import MetricFn, OptimizerFn, TorchTask, TrainFn, accuracy
from sheaf.task.metric_log import with_logged

__all__ = [
    "DEVICE_PATTERN",
    "GRADIENT_CORRECTION",
    "LOCAL_STEPS",
    "MODELS",
    "PROXIMAL_ANCHOR",
    "AttackedTask",
    "CharLSTM",
    "ClientContext",
    "ClientStep",
    "EvalResult",
    "FitFn",
    "FitInstructions",
    "FitResult",
    "MetricFn",
    "OptimizerFn",
    "PersonalizeFn",
    "SoftmaxTask",
    "Task",
    "TorchTask",
    "TrainFn",
    "accuracy",
    "attack_task",
    "build_model",
    "build_task",
    "char_lstm",
    "cnn",
    "cnn_wide",
    "collecting",
    "cuda_count",
    "evaluate_client",
    "fit_client",
    "fit_instructions",
    "fit_with_steps",
    "leaf_lstm",
    "load_task",
    "log_metrics",
    "logistic_regression",
    "malicious_clients",
    "malicious_in_round",
    "merged_state",
    "mlp",
    "model_factory",
    "optim",
    "personalizing",
    "prepare_worker",
    "process_device",
    "resolve_device",
    "resolve_steps",
    "softmax_task",
    "step_names",
    "steps_by_name",
    "use_device",
    "with_logged",
    "worker_devices",
]

_LAZY = {
    "MODELS": "sheaf.task.models",
    "CharLSTM": "sheaf.task.models",
    "char_lstm": "sheaf.task.models",
    "cnn": "sheaf.task.models",
    "cnn_wide": "sheaf.task.models",
    "leaf_lstm": "sheaf.task.models",
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
