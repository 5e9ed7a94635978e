"""The Task protocol: the user's learning code, the same in simulation and deployment.

A task knows how to create initial parameters, train them on one client's data and
evaluate them on a split. It receives and returns framework-free
:class:`~sheaf.core.params.Params`, so strategies, backends and the wire never see torch.
:class:`~sheaf.task.torch_task.TorchTask` is the ready-made torch implementation; any
object with these three methods (plain NumPy included) is a task too.

Example (a task in plain NumPy: least squares on one weight vector):
    >>> import numpy as np
    >>> from sheaf.core.params import Params
    >>> from sheaf.data.dataset import Split
    >>> class MeanTask:
    ...     def init_params(self, seed):
    ...         return Params({"w": np.zeros(2)})
    ...     def fit(self, params, data, instructions):
    ...         return FitResult(Params({"w": data.x.mean(axis=0)}), len(data), {})
    ...     def evaluate(self, params, data):
    ...         return EvalResult(float(((data.x - params["w"]) ** 2).mean()), len(data), {})
    >>> isinstance(MeanTask(), Task)
    True
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from sheaf.core.config import TrainConfig
from sheaf.core.encoded import Encoded
from sheaf.core.params import Params
from sheaf.core.update import Metrics, Scalar, TensorGroups
from sheaf.data.dataset import Split
from sheaf.task.device import use_device

__all__ = ["EvalResult", "FitInstructions", "FitResult", "Task", "prepare_worker"]


@dataclass(frozen=True)
class FitInstructions:
    """What the server asks of one client for one round.

    Attributes:
        round: the round number (1-based).
        client_id: the client being asked.
        train: local training settings (epochs, batch size, optimiser, lr).
        seed: the seed for this client's randomness this round (shuffles, dropout); derived
            from (run seed, round, client id), so a client trains the same way wherever
            and whenever it runs.
        options: per-round settings from the strategy (e.g. a proximal term's ``mu``).
        payload: tensors the strategy sends to every client this round (e.g. SCAFFOLD's
            server control variate).
        client_state: this client's own persistent state from its earlier rounds (e.g. its
            control variate, or a personal head); empty the first time it trains.
        client_steps: the names of the client steps that run around this training
            (:mod:`sheaf.task.client_steps`), outermost first.
    """

    round: int
    client_id: int
    train: TrainConfig
    seed: int
    options: Mapping[str, Scalar] = field(default_factory=dict)
    payload: TensorGroups = field(default_factory=dict)
    client_state: TensorGroups = field(default_factory=dict)
    client_steps: tuple[str, ...] = ()


@dataclass(frozen=True)
class FitResult:
    """What local training produced.

    Attributes:
        params: the trained parameters (same names, shapes and dtypes as the input).
        num_examples: training examples used (the client's weight in FedAvg).
        metrics: numbers the client shares, e.g. its mean training loss.
        extras: further tensors sent to the server beside the delta.
        client_state: the client's new persistent state (kept by the client, never sent to
            the server); None keeps the state it had.
        encoded: the update as an encoder sent it (a compression client step); then
            ``params`` are not sent, only this.
    """

    params: Params
    num_examples: int
    metrics: Metrics = field(default_factory=dict)
    extras: TensorGroups = field(default_factory=dict)
    client_state: TensorGroups | None = None
    encoded: Encoded | None = None


@dataclass(frozen=True)
class EvalResult:
    """What evaluating params on a split produced.

    Attributes:
        loss: mean loss over the split.
        num_examples: examples evaluated.
        metrics: further metrics, e.g. ``accuracy``.
    """

    loss: float
    num_examples: int
    metrics: Metrics = field(default_factory=dict)


@runtime_checkable
class Task(Protocol):
    """The user's learning code. Implementations must be deterministic given the seed.

    A task may also define ``setup_worker(threads: int) -> None``; backends call it once in
    every worker before any work (TorchTask fixes torch's thread count there). And it may
    define ``check_evaluation(client_id: int) -> None``, which raises to refuse evaluating
    for that client (a data owner's own policy: one with a privacy budget sends no
    unaccounted test metrics); clients ask it before every evaluation.
    """

    def init_params(self, seed: int) -> Params:
        """Create the initial global parameters from ``seed``."""
        ...

    def fit(self, params: Params, data: Split, instructions: FitInstructions) -> FitResult:
        """Train ``params`` on ``data`` (a client's training split) and return the result."""
        ...

    def evaluate(self, params: Params, data: Split) -> EvalResult:
        """Evaluate ``params`` on ``data``."""
        ...


def prepare_worker(task: Task, threads: int, device: str | None = None) -> None:
    """Set up the current process for ``task`` (torch threads, device) before it works.

    Torch's intra-op thread count changes results (DESIGN.md), so wherever torch is loaded
    it is fixed here, whether or not the task says so: a task that wraps a TorchTask without
    passing ``setup_worker`` on, or uses torch itself, would otherwise train with whatever
    count an earlier run in the same process left behind. The device (``cpu``, ``cuda:N``;
    :mod:`sheaf.task.device`) is this process's too, where given (None keeps it: a wrapper
    passing set-up on to the task it wraps). Then the task's own ``setup_worker(threads)``
    runs, if it has one.
    """
    if device is not None:
        use_device(device)
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(threads)
    setup = getattr(task, "setup_worker", None)
    if callable(setup):
        setup(threads)
