"""The user's learning code (Task), the ready-made TorchTask, and the client side of a round.

Torch is imported only when a torch-backed name is first used, so ``import sheaf`` and the
CLI's help stay fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sheaf.task.attack import AttackedTask, attack_task, malicious_clients, malicious_in_round
from sheaf.task.base import EvalResult, FitInstructions, FitResult, Task, prepare_worker
from sheaf.task.client import evaluate_client, fit_client, fit_instructions
from sheaf.task.client_steps import (
    CLIENT_STEPS_OPTION,
    GRADIENT_CORRECTION,
    LOCAL_STEPS,
    ClientContext,
    ClientStep,
    FitFn,
    available_client_steps,
    client_step,
    fit_with_steps,
    merged_state,
    register_client_step,
    requested_steps,
)
from sheaf.task.correction_steps import CORRECTION_STEPS, SCAFFOLD_KEY, effective_lr, fednova_norm, reported_steps
from sheaf.task.factory import build_task, load_task
from sheaf.task.personal_steps import FEDPER_KEY, PERSONAL_STEPS, head_names

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
    "CLIENT_STEPS_OPTION",
    "CORRECTION_STEPS",
    "FEDPER_KEY",
    "GRADIENT_CORRECTION",
    "LOCAL_STEPS",
    "MODELS",
    "PERSONAL_STEPS",
    "SCAFFOLD_KEY",
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
    "Task",
    "TorchTask",
    "TrainFn",
    "accuracy",
    "attack_task",
    "available_client_steps",
    "build_model",
    "build_task",
    "char_lstm",
    "client_step",
    "cnn",
    "effective_lr",
    "evaluate_client",
    "fednova_norm",
    "fit_client",
    "fit_instructions",
    "fit_with_steps",
    "head_names",
    "load_task",
    "logistic_regression",
    "malicious_clients",
    "malicious_in_round",
    "merged_state",
    "mlp",
    "model_factory",
    "optim",
    "prepare_worker",
    "register_client_step",
    "reported_steps",
    "requested_steps",
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
