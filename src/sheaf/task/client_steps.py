"""Client steps: the client-side halves of strategies, run by ``fit_client`` around ``task.fit``.

Some algorithms need more of a client than "train and send the delta": SCAFFOLD corrects
every local gradient and keeps a control variate, FedNova reports how far its optimiser
normalises the update, q-FFL reports the loss at the global model before training, FedPer
keeps a personal head. Each is a :class:`ClientStep`: a function that wraps the client's
training — it may change the params and instructions going in and the result coming out.

A strategy asks for its steps by name in ``options["client_steps"]`` (comma-separated, in
order; the first wraps all the others). :func:`fit_with_steps` runs them; it is called by
:func:`sheaf.task.client.fit_client`, so a client does the same in simulation, in a worker
process or deployed — only registered steps run, whatever the server names. The
server-side halves are ordinary strategy steps (see ``docs/strategies.md``).

Two instruction keys let a step steer a task's own loop; :class:`~sheaf.task.TorchTask`'s
standard loop honours both, and a custom loop should too:

- ``payload["gradient_correction"]``: tensors added to the gradient of every local step
  (SCAFFOLD's ``c − c_i``), by parameter name;
- ``options["local_steps"]``: train exactly this many mini-batch steps instead of
  ``train.epochs`` epochs (fine-tuning for personalised evaluation).

Example:
    >>> import numpy as np
    >>> from sheaf.core.params import Params
    >>> def doubled(fit, params, instructions, client):
    ...     result = fit(params, instructions)
    ...     return FitResult(result.params, result.num_examples, {**result.metrics, "twice": 2.0})
    >>> register_client_step(ClientStep("doubled", doubled))
    >>> requested_steps({"client_steps": "doubled"})
    ('doubled',)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import NamedTuple

from sheaf.core.errors import TaskError
from sheaf.core.params import Params
from sheaf.core.update import Scalar, TensorGroups
from sheaf.data.dataset import ClientData
from sheaf.task.base import FitInstructions, FitResult, Task

__all__ = [
    "CLIENT_STEPS_OPTION",
    "GRADIENT_CORRECTION",
    "LOCAL_STEPS",
    "ClientContext",
    "ClientStep",
    "FitFn",
    "available_client_steps",
    "client_step",
    "fit_with_steps",
    "merged_state",
    "register_client_step",
    "requested_steps",
]

#: The option naming the client steps to run, comma-separated.
CLIENT_STEPS_OPTION = "client_steps"
#: Payload group added to every local gradient, by parameter name.
GRADIENT_CORRECTION = "gradient_correction"
#: Option: train exactly this many mini-batch steps (instead of ``train.epochs`` epochs).
LOCAL_STEPS = "local_steps"

#: The training a step wraps: ``(params, instructions) -> result``.
FitFn = Callable[[Params, FitInstructions], FitResult]


@dataclass(frozen=True)
class ClientContext:
    """What a client step may use besides the params and instructions.

    Attributes:
        task: the client's task (e.g. to evaluate before or after training).
        data: the client's data: its training split and its local test split.
    """

    task: Task
    data: ClientData


class ClientStep(NamedTuple):
    """A named wrapper around a client's training.

    Attributes:
        name: what strategies put in ``options["client_steps"]``.
        run: ``(fit, params, instructions, client) -> result``; calls ``fit`` (the rest of
            the chain and the task) at most once, with whatever params and instructions it
            decides, and returns the result to send.
        personal: True if the step decides which model the client itself uses (FedPer's
            personal head); such steps also run in personalised evaluation.
    """

    name: str
    run: Callable[[FitFn, Params, FitInstructions, ClientContext], FitResult]
    personal: bool = False


_REGISTRY: dict[str, ClientStep] = {}


def _builtins() -> None:
    # Imported on first use: the built-in steps import this module for their types.
    from sheaf.task import correction_steps, personal_steps

    for step in (*correction_steps.CORRECTION_STEPS, *personal_steps.PERSONAL_STEPS):
        _REGISTRY.setdefault(step.name, step)


def register_client_step(step: ClientStep) -> None:
    """Make ``step`` runnable by name (replaces a step of the same name)."""
    _builtins()
    _REGISTRY[step.name] = step


def available_client_steps() -> list[str]:
    """Names of every registered client step."""
    _builtins()
    return sorted(_REGISTRY)


def client_step(name: str) -> ClientStep:
    """The registered step called ``name``.

    Raises:
        TaskError: if no step has that name (the message lists those that exist).
    """
    _builtins()
    step = _REGISTRY.get(name)
    if step is None:
        raise TaskError(f"unknown client step {name!r}; this client knows: {', '.join(available_client_steps())}")
    return step


def requested_steps(options: Mapping[str, Scalar]) -> tuple[str, ...]:
    """The step names in ``options["client_steps"]``, in order."""
    names = str(options.get(CLIENT_STEPS_OPTION, ""))
    return tuple(name.strip() for name in names.split(",") if name.strip())


def fit_with_steps(task: Task, data: ClientData, params: Params, instructions: FitInstructions) -> FitResult:
    """Train on ``data.train`` through the client steps the instructions ask for.

    With no steps this is exactly ``task.fit(params, data.train, instructions)``.

    Raises:
        TaskError: if a requested step is unknown or cannot work with what it was given.
    """
    steps = [client_step(name) for name in requested_steps(instructions.options)]
    context = ClientContext(task, data)

    def train(params: Params, instructions: FitInstructions) -> FitResult:
        return task.fit(params, data.train, instructions)

    fit: FitFn = train
    for step in reversed(steps):
        fit = partial(_wrapped, step, fit, context)
    return fit(params, instructions)


def _wrapped(
    step: ClientStep, inner: FitFn, context: ClientContext, params: Params, instructions: FitInstructions
) -> FitResult:
    return step.run(inner, params, instructions, context)


def merged_state(instructions: FitInstructions, result: FitResult, **groups: Params) -> TensorGroups:
    """The client's new state: its old state, what the task returned, then ``groups``."""
    state = dict(instructions.client_state)
    state.update(result.client_state or {})
    state.update(groups)
    return state
