"""Finding the task for a run: a built-in model, or the user's ``module:attr``.

Example:
    >>> from sheaf.core.config import RunConfig
    >>> from sheaf.data.dataset import DatasetInfo
    >>> task = build_task(RunConfig(), DatasetInfo("digits", (64,), 10, tuple("0123456789")))
    >>> type(task).__name__
    'TorchTask'
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable

from sheaf.core.config import RunConfig
from sheaf.core.errors import TaskError
from sheaf.data.dataset import DatasetInfo
from sheaf.task.base import Task

__all__ = ["build_task", "load_task"]


def load_task(spec: str, info: DatasetInfo | None = None) -> Task:
    """Load a task from ``"package.module:attr"``.

    ``attr`` may be a Task object, or a callable (a class or a factory) returning one; a
    callable with a required positional parameter is given the dataset's
    :class:`~sheaf.data.dataset.DatasetInfo`.

    Raises:
        TaskError: if the spec is malformed, cannot be imported, or is not a Task.
    """
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise TaskError(f"task {spec!r} must look like 'package.module:attr'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise TaskError(f"cannot import task module {module_name!r}: {exc}; is it on PYTHONPATH?") from None
    try:
        obj: object = getattr(module, attr)
    except AttributeError:
        raise TaskError(f"module {module_name!r} has no attribute {attr!r}") from None
    if inspect.isclass(obj) or (not isinstance(obj, Task) and callable(obj)):
        factory: Callable[..., object] = obj
        wants_info = any(
            p.default is inspect.Parameter.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
            for p in inspect.signature(factory).parameters.values()
        )
        obj = factory(info) if wants_info else factory()
    if not isinstance(obj, Task):
        raise TaskError(f"{spec!r} is not a Task (needs init_params, fit and evaluate), got {type(obj).__name__}")
    return obj


def build_task(config: RunConfig, info: DatasetInfo) -> Task:
    """The task a run uses: ``config.task`` if set, else a TorchTask of ``config.model``."""
    if config.task:
        return load_task(config.task, info)
    from sheaf.task.models import model_factory
    from sheaf.task.torch_task import TorchTask

    return TorchTask(
        model_factory(config.model, info.num_features, info.num_classes, info.input_shape, input_dtype=info.input_dtype)
    )
