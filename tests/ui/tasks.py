"""A tiny NumPy task for dashboard tests: fast, deterministic, and able to log its own metrics,
fail on purpose, and name a metric with markup (which every page must show as text)."""

from __future__ import annotations

import time

import numpy as np

from sheaf.core.params import Params
from sheaf.data.dataset import Split
from sheaf.task import log_metrics
from sheaf.task.base import EvalResult, FitInstructions, FitResult

#: A metric name and a failure reason that would run script if a page put them in as markup.
HOSTILE_METRIC = '<img src=x onerror="window.__pwned=1">'
HOSTILE_REASON = '<script>window.__pwned=2</script> & "quoted" <b>bold</b>'


class CountingTask:
    """Each round moves one weight up by 0.1; accuracy follows it. Logs ``f1`` (evaluation) and
    ``grad_norm`` (training) through :func:`sheaf.task.log_metrics`.

    Args:
        failing: this client raises in every fit, with :data:`HOSTILE_REASON` (None: none).
        hostile: also log a metric named :data:`HOSTILE_METRIC`.
        pause: seconds each fit sleeps (to watch a run live).
    """

    def __init__(self, failing: int | None = None, hostile: bool = False, pause: float = 0.0) -> None:
        self.failing = failing
        self.hostile = hostile
        self.pause = pause

    def init_params(self, seed: int) -> Params:
        return Params({"w": np.zeros(2, np.float32)})

    def fit(self, params: Params, data: Split, instructions: FitInstructions) -> FitResult:
        if instructions.client_id == self.failing:
            raise ValueError(HOSTILE_REASON)
        if self.pause:
            time.sleep(self.pause)
        log_metrics(grad_norm=0.5 + instructions.client_id)
        return FitResult(
            Params({"w": params["w"] + np.float32(0.1)}), len(data), {"train_loss": 1.0 / instructions.round}
        )

    def evaluate(self, params: Params, data: Split) -> EvalResult:
        w = float(params["w"][0])
        accuracy = min(1.0, 0.2 + w) * (1.0 if len(data) % 2 else 0.9)
        log_metrics(f1=accuracy / 2)
        if self.hostile:
            log_metrics(**{HOSTILE_METRIC: 0.25})
        return EvalResult(1.0 / (1.0 + w), len(data), {"accuracy": accuracy})
