"""FedPer: a shared body averaged by the server, and a personal head that stays on each client.

Both halves live here. The client half, :func:`fedper_client_step`, trains the global body
with the client's own head (its client state ``"fedper"``; the global head the first time
it trains), keeps the trained head and sends a delta whose head part is zero. The server
half is FedAvg's weighted mean, so the global head stays at its initial value and only the
body learns — which also keeps FedPer a sum-only strategy (secure aggregation can carry it).

The global model alone is therefore not what a FedPer client uses: the round loop's
personalised evaluation (``docs/strategies.md``) evaluates each client with the global body
and its own head (the step's ``personalize``), beside the global model.

Example:
    >>> import numpy as np
    >>> from sheaf.core.params import Params
    >>> s = fedper(head="3.")
    >>> [step.name for step in s.client_steps], dict(s.client_options), s.needs_updates
    (['fedper'], {'fedper_head': '3.'}, False)
    >>> p = Params({"0.weight": np.zeros(2), "0.bias": np.zeros(1), "2.weight": np.zeros(2), "2.bias": np.zeros(1)})
    >>> head_names(p, "")
    ['2.weight', '2.bias']
    >>> head_names(p, "0.bias, 2.")
    ['0.bias', '2.weight', '2.bias']

References:
    Arivazhagan, Aggarwal, Singh, Choudhary. Federated Learning with Personalization
    Layers. arXiv:1912.00818, 2019.
"""

from __future__ import annotations

import dataclasses

from sheaf.core.errors import ConfigError, TaskError
from sheaf.core.params import Params
from sheaf.strategies.aggregate import weighted_mean
from sheaf.strategies.base import ClientHalf, EmptyState, ServerStep, Strategy, chain, client_side
from sheaf.task.base import FitInstructions, FitResult
from sheaf.task.client_steps import ClientContext, ClientStep, FitFn, merged_state

__all__ = ["FEDPER_HEAD", "FEDPER_KEY", "fedper", "fedper_client_step", "head_names", "personal_layers"]

#: Client-state group holding FedPer's personal head.
FEDPER_KEY = "fedper"
#: The option naming the personal tensors (comma-separated name prefixes).
FEDPER_HEAD = "fedper_head"


def head_names(params: Params, spec: str) -> list[str]:
    """The personal tensors: names starting with any comma-separated prefix of ``spec``.

    An empty spec means the last layer: the tensors whose module prefix (the name up to its
    last dot) is that of the model's last tensor.

    Raises:
        TaskError: if the spec names no tensor of the model.
    """
    names = list(params)
    if not spec.strip():
        last = names[-1].rpartition(".")[0]
        return [n for n in names if n.rpartition(".")[0] == last] if last else names[-1:]
    prefixes = [p.strip() for p in spec.split(",") if p.strip()]
    chosen = [n for n in names if any(n.startswith(p) for p in prefixes)]
    if not chosen:
        raise TaskError(f"fedper head {spec!r} names no tensor of the model; its tensors are {names}")
    return chosen


def _own_model(params: Params, instructions: FitInstructions, client: ClientContext) -> Params:
    """The global body with this client's own head (the global head until it has one)."""
    head = head_names(params, str(instructions.options.get(FEDPER_HEAD, "")))
    own = instructions.client_state.get(FEDPER_KEY)
    if own is not None and set(own) == set(head) and all(own[n].shape == params[n].shape for n in head):
        return Params({n: own[n].astype(params[n].dtype) if n in own else params[n] for n in params})
    return params


def _fedper(fit: FitFn, params: Params, instructions: FitInstructions, client: ClientContext) -> FitResult:
    head = head_names(params, str(instructions.options.get(FEDPER_HEAD, "")))
    result = fit(_own_model(params, instructions, client), instructions)
    trained = result.params
    personal = Params({n: trained[n] for n in head})
    # The head never leaves the client: its part of the delta is zero.
    sent = Params({n: params[n] if n in personal else trained[n] for n in params})
    return dataclasses.replace(
        result, params=sent, client_state=merged_state(instructions, result, **{FEDPER_KEY: personal})
    )


def fedper_client_step() -> ClientStep:
    """FedPer's client half: train the global body with its own head, keep the head.

    Its ``personalize`` gives the model the client itself uses: the global body with its
    own head.
    """
    return ClientStep(FEDPER_KEY, _fedper, personalize=_own_model)


def personal_layers(head: str = "") -> ServerStep[EmptyState]:
    """The layers named by ``head`` stay on each client; the server changes nothing.

    Raises:
        ConfigError: if head is not a string.
    """
    if not isinstance(head, str):
        raise ConfigError(f"strategy.head must be a string of name prefixes for fedper, got {head!r}")
    half = ClientHalf(steps=(fedper_client_step(),), options={FEDPER_HEAD: head})
    return client_side("personal_layers", half)


def fedper(head: str = "") -> Strategy:
    """FedPer: FedAvg on the base layers; the personalisation layers stay on each client.

    Args:
        head: comma-separated name prefixes of the personal tensors (e.g. ``"3."`` for the
            built-in MLP's last layer); empty (the default) takes the model's last layer.

    Raises:
        ConfigError: if head is not a string.

    Example:
        >>> dict(fedper().client_options)
        {'fedper_head': ''}

    References:
        Arivazhagan, Aggarwal, Singh, Choudhary. Federated Learning with Personalization
        Layers. arXiv:1912.00818, 2019.
    """
    return chain(weighted_mean(), personal_layers(head), name="fedper")
