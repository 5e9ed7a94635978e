"""Tasks for the deployment tests: plain NumPy, so client processes start without torch."""

from __future__ import annotations

import os
import threading
import time

import numpy as np

from sheaf.core.params import Params
from sheaf.data.dataset import DatasetInfo, Split
from sheaf.strategies import Strategy, chain, weighted_mean
from sheaf.strategies.base import Broadcast, EmptyState, RoundContext, client_side
from sheaf.task import softmax as sheaf_softmax
from sheaf.task.base import EvalResult, FitInstructions, FitResult


class SoftmaxTask(sheaf_softmax.SoftmaxTask):
    """:class:`sheaf.task.softmax.SoftmaxTask`, with hooks for tests of timing:
    ``SHEAF_TEST_FIT_SECONDS`` makes every fit take at least that long;
    ``SHEAF_TEST_SLOW_ROUND`` and ``SHEAF_TEST_SLOW_SECONDS`` stall one round's fit;
    ``SHEAF_TEST_FIT_GATE`` (a path) makes every fit wait until that file exists (at most
    10 minutes) — the gate of a client in another process, opened by the test.
    """

    def fit(self, params: Params, data: Split, instructions: FitInstructions) -> FitResult:
        gate, deadline = os.environ.get("SHEAF_TEST_FIT_GATE"), time.monotonic() + 600
        while gate and not os.path.exists(gate) and time.monotonic() < deadline:
            time.sleep(0.05)
        if str(instructions.round) == os.environ.get("SHEAF_TEST_SLOW_ROUND"):
            time.sleep(float(os.environ.get("SHEAF_TEST_SLOW_SECONDS", "60")))
        time.sleep(float(os.environ.get("SHEAF_TEST_FIT_SECONDS", "0")))
        return super().fit(params, data, instructions)


def softmax(info: DatasetInfo) -> SoftmaxTask:
    """The task factory: sized from the dataset's info, like a user's factory would be."""
    return SoftmaxTask(info.num_features, info.num_classes)


class CountingTask:
    """Keeps a per-client participation count as client state; checks the strategy payload."""

    def init_params(self, seed: int) -> Params:
        return Params({"w": np.zeros(2)})

    def fit(self, params: Params, data: Split, instructions: FitInstructions) -> FitResult:
        assert instructions.options["round_option"] == instructions.round
        assert instructions.payload["server"]["r"].tolist() == [float(instructions.round)]
        previous = instructions.client_state.get("count", Params({"n": np.zeros(1)}))
        count = Params({"n": previous["n"] + 1})
        moved = params.map(lambda a: a + count["n"][0])
        return FitResult(moved, len(data), extras={"echo": count}, client_state={"count": count})

    def evaluate(self, params: Params, data: Split) -> EvalResult:
        return EvalResult(0.0, len(data), {"accuracy": 1.0})


def _send_round(state: EmptyState, ctx: RoundContext) -> Broadcast:
    return Broadcast({"round_option": ctx.round}, {"server": Params({"r": np.array([float(ctx.round)])})})


def counting_strategy() -> Strategy:
    """FedAvg that sends the round as an option and as a payload tensor."""
    return chain(weighted_mean(), client_side("counting", configure=_send_round), name="counting")


class BigTask:
    """One large float32 tensor (``SHEAF_TEST_BIG_ELEMENTS``, default 50M = 200 MB); cheap steps."""

    def __init__(self) -> None:
        self.elements = int(os.environ.get("SHEAF_TEST_BIG_ELEMENTS", str(50_000_000)))

    def init_params(self, seed: int) -> Params:
        return Params({"w": np.zeros(self.elements, np.float32), "b": np.zeros(3, np.float32)})

    def fit(self, params: Params, data: Split, instructions: FitInstructions) -> FitResult:
        step = np.float32(float(data.y.mean()) + instructions.round)
        return FitResult(Params({"w": params["w"] + step, "b": params["b"] - step}), len(data))

    def evaluate(self, params: Params, data: Split) -> EvalResult:
        return EvalResult(float(params["w"][:10].mean()), len(data), {"accuracy": 0.5})


#: Opens the gate of :func:`gated_softmax` clients (in-process clients share this module).
GATE = threading.Event()


class GatedSoftmaxTask(SoftmaxTask):
    """A deliberately slow client for in-process tests: every fit waits until :data:`GATE`
    opens (at most a minute), then trains as :class:`SoftmaxTask`."""

    def fit(self, params: Params, data: Split, instructions: FitInstructions) -> FitResult:
        GATE.wait(60)
        return super().fit(params, data, instructions)


def gated_softmax(info: DatasetInfo) -> GatedSoftmaxTask:
    """The factory of a client whose fits wait for :data:`GATE`."""
    return GatedSoftmaxTask(info.num_features, info.num_classes)
