"""Client halves of SCAFFOLD, FedNova and q-FFL: what a client adds around its training.

- ``scaffold``: reads the server control variate ``c`` (payload ``"scaffold"``) and its own
  ``c_i`` (client state ``"scaffold"``, zero at first), has every local gradient corrected
  by ``c − c_i`` (payload ``"gradient_correction"``), then computes option II's
  ``c_i⁺ = c_i − c + (x − y) / (K η)`` from its ``K`` local steps (metric ``"steps"``);
  keeps ``c_i⁺`` as its state and sends ``c_i⁺ − c_i`` in the extras ``"scaffold"``.
- ``fednova``: reports ``"fednova_norm"`` = ‖a_i‖₁, how many gradients its update sums
  (``K`` for plain SGD, ``[K − ρ(1 − ρᴷ)/(1 − ρ)] / (1 − ρ)`` with momentum ρ).
- ``qffl``: reports ``"qffl_loss"``, its loss at the global model before training, and
  ``"qffl_lipschitz"`` = 1/η, the paper's estimate of the Lipschitz constant L.

With heavy-ball momentum ρ a local SGD step moves ``η/(1 − ρ)`` times the gradient once the
momentum has built up, so SCAFFOLD and q-FFL use that effective learning rate; with ρ = 0
it is the papers' η exactly. They need local SGD: with Adam there is no such rate, and
SCAFFOLD and FedNova refuse to run (the client fails with a message saying so).

Example:
    >>> from sheaf.core.config import TrainConfig
    >>> round(fednova_norm(steps=4, train=TrainConfig(momentum=0.0)), 3)
    4.0
    >>> round(fednova_norm(steps=4, train=TrainConfig(momentum=0.5)), 3)   # (4 - 0.5 * 0.9375 / 0.5) / 0.5
    6.125

References:
    Karimireddy, Kale, Mohri, Reddi, Stich, Suresh. SCAFFOLD: Stochastic Controlled
    Averaging for Federated Learning. ICML 2020. Wang, Liu, Liang, Joshi, Poor. Tackling the
    Objective Inconsistency Problem in Heterogeneous Federated Optimization. NeurIPS 2020.
    Li, Sanjabi, Beirami, Smith. Fair Resource Allocation in Federated Learning. ICLR 2020.
"""

from __future__ import annotations

import dataclasses
import math

from sheaf.core.config import TrainConfig
from sheaf.core.errors import TaskError
from sheaf.core.params import Params
from sheaf.task.base import FitInstructions, FitResult
from sheaf.task.client_steps import GRADIENT_CORRECTION, ClientContext, ClientStep, FitFn, merged_state

__all__ = ["CORRECTION_STEPS", "SCAFFOLD_KEY", "effective_lr", "fednova_norm", "reported_steps"]

#: Payload group (server ``c``), client-state group (``c_i``) and extras group (``Δc_i``).
SCAFFOLD_KEY = "scaffold"


def effective_lr(train: TrainConfig, algorithm: str) -> float:
    """The step size of local SGD once momentum has built up: ``lr / (1 − momentum)``.

    Raises:
        TaskError: if the client optimiser is not SGD.
    """
    if train.optimizer != "sgd":
        raise TaskError(f"{algorithm} assumes local SGD; set train.optimizer=sgd (got {train.optimizer!r})")
    return train.lr / (1.0 - train.momentum)


def reported_steps(result: FitResult, algorithm: str) -> float:
    """The ``"steps"`` metric a task reported (local optimiser steps).

    Raises:
        TaskError: if the task did not report it.
    """
    steps = result.metrics.get("steps")
    if steps is None:
        raise TaskError(f"{algorithm} needs the task to report its local optimiser steps as metric 'steps'")
    return float(steps)


def fednova_norm(steps: float, train: TrainConfig) -> float:
    """‖a_i‖₁ of Wang et al. for ``steps`` local SGD steps with the configured momentum.

    Raises:
        TaskError: if the client optimiser is not SGD.
    """
    effective_lr(train, "FedNova")
    rho = train.momentum
    if rho == 0:
        return float(steps)
    return (steps - rho * (1 - math.pow(rho, steps)) / (1 - rho)) / (1 - rho)


def _scaffold(fit: FitFn, params: Params, instructions: FitInstructions, client: ClientContext) -> FitResult:
    server = instructions.payload.get(SCAFFOLD_KEY)
    if server is None or not params.same_structure(server):
        raise TaskError("SCAFFOLD needs the server control variate (payload 'scaffold') shaped like the model")
    own = instructions.client_state.get(SCAFFOLD_KEY)
    if own is None or not params.same_structure(own):
        own = params.zeros_like()
    lr = effective_lr(instructions.train, "SCAFFOLD")
    payload = {**instructions.payload, GRADIENT_CORRECTION: server - own}
    result = fit(params, dataclasses.replace(instructions, payload=payload))
    steps = reported_steps(result, "SCAFFOLD")
    if steps > 0:
        # Option II: c_i+ = c_i - c + (x - y) / (K lr)
        updated = own - server + (params - result.params) * (1.0 / (steps * lr))
    else:
        updated = own
    return dataclasses.replace(
        result,
        extras={**result.extras, SCAFFOLD_KEY: updated - own},
        client_state=merged_state(instructions, result, **{SCAFFOLD_KEY: updated}),
    )


def _fednova(fit: FitFn, params: Params, instructions: FitInstructions, client: ClientContext) -> FitResult:
    effective_lr(instructions.train, "FedNova")
    result = fit(params, instructions)
    norm = fednova_norm(reported_steps(result, "FedNova"), instructions.train)
    return dataclasses.replace(result, metrics={**result.metrics, "fednova_norm": norm})


def _qffl(fit: FitFn, params: Params, instructions: FitInstructions, client: ClientContext) -> FitResult:
    loss = client.task.evaluate(params, client.data.train).loss
    train = instructions.train
    lr = effective_lr(train, "q-FFL") if train.optimizer == "sgd" else train.lr
    result = fit(params, instructions)
    return dataclasses.replace(result, metrics={**result.metrics, "qffl_loss": float(loss), "qffl_lipschitz": 1.0 / lr})


#: The steps this module registers.
CORRECTION_STEPS = (ClientStep("scaffold", _scaffold), ClientStep("fednova", _fednova), ClientStep("qffl", _qffl))
