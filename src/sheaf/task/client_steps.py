"""Client steps: the client-side halves of strategies, run by ``fit_client`` around ``task.fit``.

Some algorithms need more of a client than "train and send the delta": SCAFFOLD corrects
every local gradient and keeps a control variate, FedNova reports how far its optimiser
normalises the update, q-FFL reports the loss at the global model before training, FedPer
keeps a personal head, differential privacy clips and noises. Each is a
:class:`ClientStep`: a value holding a function that wraps the client's training — it may
change the params and instructions going in and the result coming out. The strategy step
that needs it declares it (its client half, :mod:`sheaf.strategies.base`), beside its
server half.

Steps are values, passed in from where a run is assembled — never looked up in a global
registry, never named by the other side and imported. Where a step cannot travel as a
value (to a worker process, or to a deployed client), only its *name* travels, and the
receiving side resolves it against the steps it was given itself (:func:`resolve_steps`):
a client runs only steps it knows and agreed to, whatever the server names.

Three instruction keys let a step steer a task's own loop; :class:`~sheaf.task.TorchTask`'s
standard loop honours them, and a custom loop should too:

- ``payload["gradient_correction"]``: tensors added to the gradient of every local step
  (SCAFFOLD's ``c − c_i``), by parameter name;
- ``options["local_steps"]``: train exactly this many mini-batch steps instead of
  ``train.epochs`` epochs (fine-tuning for personalised evaluation);
- ``payload["proximal_anchor"]``: the point the proximal term ``(mu / 2) ||w − anchor||²``
  (``options["proximal_mu"]``) pulls towards, instead of the params training starts from
  (Ditto's personal model, pulled towards the global one).

Example:
    >>> import numpy as np
    >>> from sheaf.core.params import Params
    >>> def doubled(fit, params, instructions, client):
    ...     result = fit(params, instructions)
    ...     return FitResult(result.params, result.num_examples, {**result.metrics, "twice": 2.0})
    >>> step = ClientStep("doubled", doubled)
    >>> [s.name for s in resolve_steps(["doubled"], steps_by_name([step]))]
    ['doubled']
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import NamedTuple

from sheaf.core.errors import TaskError
from sheaf.core.params import Params
from sheaf.core.update import TensorGroups
from sheaf.data.dataset import ClientData
from sheaf.task.base import FitInstructions, FitResult, Task

__all__ = [
    "GRADIENT_CORRECTION",
    "LOCAL_STEPS",
    "PROXIMAL_ANCHOR",
    "ClientContext",
    "ClientStep",
    "FitFn",
    "PersonalizeFn",
    "fit_with_steps",
    "merged_state",
    "personalizing",
    "resolve_steps",
    "step_names",
    "steps_by_name",
]

#: Payload group added to every local gradient, by parameter name.
GRADIENT_CORRECTION = "gradient_correction"
#: Option: train exactly this many mini-batch steps (instead of ``train.epochs`` epochs).
LOCAL_STEPS = "local_steps"
#: Payload group the proximal term pulls towards (default: the params training starts from).
PROXIMAL_ANCHOR = "proximal_anchor"

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


#: ``(global params, instructions, client) -> the params this client itself uses``.
PersonalizeFn = Callable[[Params, FitInstructions, ClientContext], Params]


class ClientStep(NamedTuple):
    """A named wrapper around a client's training.

    Attributes:
        name: how the step is named where it cannot travel as a value (worker messages,
            the deployment wire); unique among the steps of a run.
        run: ``(fit, params, instructions, client) -> result``; calls ``fit`` (the rest of
            the chain and the task) at most once, with whatever params and instructions it
            decides, and returns the result to send.
        personalize: for steps that decide which model the client itself uses (FedPer's
            personal head, Ditto's personal model): maps the global params to that model,
            from the client's state; personalised evaluation evaluates what it returns.
    """

    name: str
    run: Callable[[FitFn, Params, FitInstructions, ClientContext], FitResult]
    personalize: PersonalizeFn | None = None

    @property
    def personal(self) -> bool:
        """Whether the step shapes the model the client itself uses."""
        return self.personalize is not None


def _personalized(
    personalize: PersonalizeFn, fit: FitFn, params: Params, instructions: FitInstructions, client: ClientContext
) -> FitResult:
    return fit(personalize(params, instructions, client), instructions)


def personalizing(step: ClientStep) -> ClientStep:
    """The step that, in personalised evaluation, swaps the global params for the model
    ``step`` gives the client itself (named ``<step>:personal``).

    Raises:
        TaskError: if ``step`` is not personal.

    Example:
        >>> own = ClientStep("own", print, personalize=lambda params, instructions, client: params * 2)
        >>> personalizing(own).name
        'own:personal'
    """
    if step.personalize is None:
        raise TaskError(f"client step {step.name!r} does not personalise the model")
    return ClientStep(f"{step.name}:personal", partial(_personalized, step.personalize))


def steps_by_name(steps: Iterable[ClientStep]) -> dict[str, ClientStep]:
    """Index steps by name (the first of each name wins).

    Example:
        >>> sorted(steps_by_name([ClientStep("b", print), ClientStep("a", print)]))
        ['a', 'b']
    """
    known: dict[str, ClientStep] = {}
    for step in steps:
        known.setdefault(step.name, step)
    return known


def step_names(steps: Iterable[ClientStep]) -> tuple[str, ...]:
    """The names of ``steps``, in order."""
    return tuple(step.name for step in steps)


def resolve_steps(names: Sequence[str], known: Mapping[str, ClientStep]) -> tuple[ClientStep, ...]:
    """The steps named ``names``, from those this side knows.

    Raises:
        TaskError: if a name is not among ``known`` (the message lists those that are).
    """
    missing = [name for name in names if name not in known]
    if missing:
        have = ", ".join(sorted(known)) or "none"
        raise TaskError(f"unknown client step(s) {', '.join(map(repr, missing))}; this client runs: {have}")
    return tuple(known[name] for name in names)


def fit_with_steps(
    task: Task, data: ClientData, params: Params, instructions: FitInstructions, steps: Sequence[ClientStep] = ()
) -> FitResult:
    """Train on ``data.train`` through ``steps`` (the first wraps all the others).

    The instructions the task sees name the steps that run around it
    (``instructions.client_steps``). With no steps this is exactly
    ``task.fit(params, data.train, instructions)``.

    Raises:
        TaskError: if a step cannot work with what it was given.
    """
    context = ClientContext(task, data)
    named = dataclasses.replace(instructions, client_steps=step_names(steps))

    def train(params: Params, instructions: FitInstructions) -> FitResult:
        return task.fit(params, data.train, instructions)

    fit: FitFn = train
    for step in reversed(steps):
        fit = partial(_wrapped, step, fit, context)
    return fit(params, named)


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
