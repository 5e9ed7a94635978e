"""Metrics a task logs itself, from anywhere inside its ``fit`` or ``evaluate``.

A task's own figures — an F1 score, an AUC, a gradient norm — can be returned in
``FitResult.metrics`` / ``EvalResult.metrics`` (or TorchTask's ``metrics=``). Where the
number is computed deep inside a training loop, a callback or a metric function, calling
:func:`log_metrics` there is simpler: whoever runs the task collects what was logged
(:func:`collecting`) and adds it to the result's metrics, so the logged figures travel the
same way as the built-in ones — per client in the run store, as weighted means per round
(training) or fairness summaries (evaluation on the clients), as the central figures (the
server's evaluation), and from there into ``sheaf runs``, the report, the dashboard and
``sheaf export``. A name the task also returns keeps the returned value.

Logging outside a collection (a task called directly in a notebook) is a no-op.

Example:
    >>> with collecting() as logged:
    ...     log_metrics(f1=0.8)
    ...     log_metrics(auc=0.9)
    >>> logged
    {'f1': 0.8, 'auc': 0.9}
    >>> log_metrics(f1=0.1)  # nobody collects: nothing happens
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar

from sheaf.core.errors import TaskError

__all__ = ["collecting", "log_metrics", "with_logged"]

_CURRENT: ContextVar[dict[str, float] | None] = ContextVar("sheaf_logged_metrics", default=None)


def log_metrics(**values: float) -> None:
    """Record named numbers for the client (or central evaluation) being computed now.

    Args:
        **values: metric name -> number (finite, or NaN for "not defined here").

    Raises:
        TaskError: if a value is not a number or is infinite.
    """
    sink = _CURRENT.get()
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise TaskError(f"log_metrics: {name!r} must be a number, got {type(value).__name__}")
        if math.isinf(float(value)):
            raise TaskError(f"log_metrics: {name!r} is infinite")
        if sink is not None:
            sink[name] = float(value)


@contextmanager
def collecting() -> Iterator[dict[str, float]]:
    """Collect what :func:`log_metrics` records inside the block into the yielded dict."""
    logged: dict[str, float] = {}
    token = _CURRENT.set(logged)
    try:
        yield logged
    finally:
        _CURRENT.reset(token)


def with_logged(returned: Mapping[str, float], logged: Mapping[str, float]) -> dict[str, float]:
    """The metrics a task returned plus those it logged (a returned name keeps its value)."""
    return {**logged, **returned}
