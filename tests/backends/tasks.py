"""Tasks, data and strategies for the backend tests.

Everything here is defined at module level so that worker processes and Ray actors can load
it, as a user's own task must be.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time
from typing import Any

import numpy as np
import torch
from torch import nn

from sheaf.core.config import DataConfig
from sheaf.core.params import Params
from sheaf.data.catalog import build_federation
from sheaf.data.dataset import Federation, Split
from sheaf.strategies.aggregate import weighted_mean
from sheaf.strategies.base import RoundContext, Strategy, UpdateStep, chain
from sheaf.task.base import EvalResult, FitInstructions, FitResult, prepare_worker
from sheaf.task.models import cnn, mlp
from sheaf.task.torch_task import TorchTask

SMALL = ["rounds=3", "fraction=1", "evaluation.interval=2", "batch_size=8", "epochs=1"]


def digits(clients: int = 10, partition: str = "dirichlet") -> Federation:
    """Digits over a few clients (Dirichlet 0.5: unequal sizes)."""
    return build_federation(DataConfig(dataset="digits", clients=clients, partition=partition), seed=0)


def image_digits(clients: int = 10) -> Federation:
    """Digits as 1x8x8 images (for convolutional models)."""
    fed = digits(clients)

    def images(x: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        return x.reshape(-1, 1, 8, 8)

    central = Split(images(fed.central_test.x), fed.central_test.y)
    info = dataclasses.replace(fed.info, input_shape=(1, 8, 8))
    return dataclasses.replace(fed, info=info, x=images(fed.x), central_test=central)


def image_cnn() -> nn.Module:
    return cnn((1, 8, 8), 10)


class WorkerOnly:
    """A TorchTask's evaluation that fails in any process but the one that made the task."""

    def __init__(self, inner: TorchTask) -> None:
        self.inner = inner
        self.home = os.getpid()

    def setup_worker(self, threads: int) -> None:
        prepare_worker(self.inner, threads)

    def init_params(self, seed: int) -> Params:
        return self.inner.init_params(seed)

    def fit(self, params: Params, data: Split, instructions: FitInstructions) -> FitResult:
        return self.inner.fit(params, data, instructions)

    def evaluate(self, params: Params, data: Split) -> EvalResult:
        if os.getpid() != self.home:
            raise RuntimeError("not here")
        return self.inner.evaluate(params, data)


class Where:
    """A TorchTask whose evaluation also reports the process it ran in (metric ``pid``)."""

    def __init__(self, inner: TorchTask) -> None:
        self.inner = inner

    def setup_worker(self, threads: int) -> None:
        prepare_worker(self.inner, threads)

    def init_params(self, seed: int) -> Params:
        return self.inner.init_params(seed)

    def fit(self, params: Params, data: Split, instructions: FitInstructions) -> FitResult:
        return self.inner.fit(params, data, instructions)

    def evaluate(self, params: Params, data: Split) -> EvalResult:
        result = self.inner.evaluate(params, data)
        return EvalResult(result.loss, result.num_examples, {**result.metrics, "pid": float(os.getpid())})


def small_mlp() -> nn.Module:
    return mlp(64, (16,), 10)


def mlp_task() -> TorchTask:
    return TorchTask(small_mlp)


def wide_mlp() -> nn.Module:
    """154k parameters: updates, states and control variates of 600 kB, more than a pipe holds."""
    return mlp(64, (2048,), 10)


class Crashing:
    """The MLP task, except one client in one round kills its own process (or raises, or hangs).

    A client that hangs first adds a file to ``marks`` (if given), so a test's clock can
    see that it hangs.
    """

    def __init__(self, client: int, round: int, how: str, marks: str = "") -> None:
        self.inner = mlp_task()
        self.client, self.round, self.how, self.marks = client, round, how, marks

    def setup_worker(self, threads: int) -> None:
        # A wrapper must pass this on: without it, torch's thread count in a worker is its
        # default and in the parent whatever the previous run left (issue 14).
        prepare_worker(self.inner, threads)

    def init_params(self, seed: int) -> Params:
        return self.inner.init_params(seed)

    def fit(self, params: Params, data: Split, instructions: FitInstructions) -> FitResult:
        if (instructions.client_id, instructions.round) == (self.client, self.round):
            if self.how == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            if self.how == "hang":
                if self.marks:
                    with open(os.path.join(self.marks, f"hang-{os.getpid()}-{time.time_ns()}"), "x"):
                        pass
                time.sleep(600)
            raise RuntimeError("out of memory")
        return self.inner.fit(params, data, instructions)

    def evaluate(self, params: Params, data: Split) -> EvalResult:
        return self.inner.evaluate(params, data)


class Stateful:
    """The MLP task plus per-client state (a visit counter) and an extra tensor sent back.

    Its metrics include torch's thread count where the client trained, so comparing runs
    compares that too.
    """

    def __init__(self) -> None:
        self.inner = mlp_task()

    def setup_worker(self, threads: int) -> None:
        prepare_worker(self.inner, threads)

    def init_params(self, seed: int) -> Params:
        return self.inner.init_params(seed)

    def fit(self, params: Params, data: Split, instructions: FitInstructions) -> FitResult:
        result = self.inner.fit(params, data, instructions)
        visits = instructions.client_state.get("counter", Params({"visits": np.zeros(1)}))["visits"] + 1
        extra = Params({"mean_x": np.asarray(data.x.mean(axis=0), dtype=np.float32)})
        return FitResult(
            result.params,
            result.num_examples,
            {**result.metrics, "visits": float(visits[0]), "threads": float(torch.get_num_threads())},
            extras={"stats": extra},
            client_state={"counter": Params({"visits": visits})},
        )

    def evaluate(self, params: Params, data: Split) -> EvalResult:
        return self.inner.evaluate(params, data)


def _clip_init(params: Params) -> tuple[()]:
    return ()


def _clip_apply(updates: Any, state: tuple[()], ctx: RoundContext) -> tuple[list[Any], tuple[()]]:
    from sheaf.core.update import Update

    out = []
    for u in updates:
        scale = min(1.0, 0.5 / max(u.delta.l2_norm(), 1e-12))
        out.append(Update(u.client_id, u.delta * scale, u.num_examples, u.metrics, u.extras))
    return out, state


def clipped_fedavg() -> Strategy:
    """FedAvg behind a per-update clipping step: needs each update, so nothing is pre-summed."""
    return chain(UpdateStep(_clip_init, _clip_apply, "clip"), weighted_mean(), name="clipped")


class Paused:
    """The MLP task, except that one client in one round has its worker paused (SIGSTOP) for
    ``seconds`` while it trains, then resumed (SIGCONT) — a process the OS stopped, or a
    machine that froze. A helper process stops and resumes it: a stopped process cannot."""

    def __init__(self, client: int, round: int, seconds: float) -> None:
        self.inner = mlp_task()
        self.client, self.round, self.seconds = client, round, seconds

    def setup_worker(self, threads: int) -> None:
        prepare_worker(self.inner, threads)

    def init_params(self, seed: int) -> Params:
        return self.inner.init_params(seed)

    def fit(self, params: Params, data: Split, instructions: FitInstructions) -> FitResult:
        if (instructions.client_id, instructions.round) == (self.client, self.round):
            code = (
                "import os, signal, time; parent = os.getppid(); os.kill(parent, signal.SIGSTOP); "
                f"time.sleep({self.seconds}); os.kill(parent, signal.SIGCONT)"
            )
            subprocess.run([sys.executable, "-c", code], check=True)  # returns once resumed
        return self.inner.fit(params, data, instructions)

    def evaluate(self, params: Params, data: Split) -> EvalResult:
        return self.inner.evaluate(params, data)


class Uneven:
    """The MLP task, with one process much slower than the others (the first to claim the
    marker file in ``folder``), and every client sleeping a few milliseconds drawn from
    (``seed``, round, client): a slow worker beside fast ones, and arrival orders that change
    with the seed. Neither may change the model."""

    def __init__(self, folder: str, seed: int, slow: float = 0.05) -> None:
        self.inner = mlp_task()
        self.folder, self.seed, self.slow = folder, seed, slow
        self._slow: bool | None = None

    def setup_worker(self, threads: int) -> None:
        prepare_worker(self.inner, threads)

    def init_params(self, seed: int) -> Params:
        return self.inner.init_params(seed)

    def _is_slow(self) -> bool:
        if self._slow is None:
            try:
                os.close(os.open(os.path.join(self.folder, "slow"), os.O_CREAT | os.O_EXCL | os.O_WRONLY))
                self._slow = True
            except FileExistsError:
                self._slow = False
        return self._slow

    def fit(self, params: Params, data: Split, instructions: FitInstructions) -> FitResult:
        jitter = np.random.default_rng([self.seed, instructions.round, instructions.client_id]).uniform(0, 0.02)
        time.sleep(jitter + (self.slow if self._is_slow() else 0.0))
        return self.inner.fit(params, data, instructions)

    def evaluate(self, params: Params, data: Split) -> EvalResult:
        return self.inner.evaluate(params, data)


class Pids(Stateful):
    """Stateful, with the id of the process each client trained in among its metrics."""

    def fit(self, params: Params, data: Split, instructions: FitInstructions) -> FitResult:
        result = super().fit(params, data, instructions)
        return dataclasses.replace(result, metrics={**result.metrics, "pid": float(os.getpid())})


class Leaky(Pids):
    """A task whose worker set-up leaves torch with 2 threads whatever the run asked for, as a
    notebook user's task might: the next run in the same process must train with its own
    thread count all the same."""

    def setup_worker(self, threads: int) -> None:
        super().setup_worker(threads)
        torch.set_num_threads(2)


class Niceness(Stateful):
    """Stateful, with the niceness of the process each client trained in among its metrics."""

    def fit(self, params: Params, data: Split, instructions: FitInstructions) -> FitResult:
        result = super().fit(params, data, instructions)
        return dataclasses.replace(result, metrics={**result.metrics, "niceness": float(os.nice(0))})
