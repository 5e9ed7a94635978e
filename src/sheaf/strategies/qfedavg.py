"""q-FedAvg: fair aggregation that gives clients with a higher loss a larger say (q-FFL).

q-FFL minimises ``Σ_k p_k F_k^(q+1) / (q + 1)``: with ``q > 0`` the clients the global model
serves worst weigh more. Each client reports ``F_k``, its loss on its training split at the
global model *before* training (metric ``qffl_loss``), and the estimate ``L = 1/η`` of the
Lipschitz constant (``qffl_lipschitz``), through the ``qffl`` client step
(:func:`qffl_client_step`, beside the server half here). Both are refused outside
:data:`QFFL_LOSS` and :data:`QFFL_LIPSCHITZ` before aggregation (a claimed ``L = 1e200``
would overflow the server's arithmetic). With
``ΔW_k = L (w − w̄_k)`` (the client's delta, scaled):

    Δ_k = F_k^q ΔW_k        h_k = q F_k^(q−1) ‖ΔW_k‖² + L F_k^q        w ← w − Σ Δ_k / Σ h_k

``q = 0`` gives the unweighted mean of the deltas. Flower's ``QFedAvg`` uses one loss for
every client — the server's own evaluation of the global model — and a fixed ``L``; sheaf
uses each client's own ``F_k`` and ``L``, as in the paper.

Example:
    >>> import numpy as np
    >>> from sheaf.core.params import Params
    >>> from sheaf.core.update import Update
    >>> from sheaf.strategies.base import RoundContext
    >>> p = Params({"w": np.zeros(1)})
    >>> ups = [Update(0, Params({"w": np.array([-0.1])}), 1, {"qffl_loss": 1.0, "qffl_lipschitz": 10.0}),
    ...        Update(1, Params({"w": np.array([0.1])}), 1, {"qffl_loss": 4.0, "qffl_lipschitz": 10.0})]
    >>> strategy = qfedavg(q=1.0)
    >>> new, _, _ = strategy.aggregate(ups, strategy.init(p), RoundContext(1, p, 0, 2))
    >>> round(float(new["w"][0]), 5)   # (1*10*-0.1 + 4*10*0.1) / ((1 + 10) + (1 + 40))
    0.05769

References:
    Li, Sanjabi, Beirami, Smith. Fair Resource Allocation in Federated Learning. ICLR 2020.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from sheaf.core.acceptance import MetricRange
from sheaf.core.params import Params
from sheaf.core.update import Update
from sheaf.strategies._hyper import real
from sheaf.strategies.base import (
    AggregateStep,
    ClientHalf,
    EmptyState,
    RoundContext,
    Strategy,
    WeightedSum,
    chain,
    init_empty,
)
from sheaf.strategies.local_sgd import effective_lr
from sheaf.task.base import FitInstructions, FitResult
from sheaf.task.client_steps import ClientContext, ClientStep, FitFn

__all__ = ["QFFL_LIPSCHITZ", "QFFL_LOSS", "qfedavg", "qffl_aggregate", "qffl_client_step"]

#: Floor on a reported loss, so ``F^(q−1)`` stays finite for a client at zero loss.
LOSS_FLOOR = 1e-10
#: A client's loss at the global model: a non-negative number of sane size.
QFFL_LOSS = MetricRange("qffl_loss", 0.0, 1e6)
#: ``L = 1/η``: learning rates from 1e-9 to 1e6 give these.
QFFL_LIPSCHITZ = MetricRange("qffl_lipschitz", 1e-6, 1e9)


def _qffl(fit: FitFn, params: Params, instructions: FitInstructions, client: ClientContext) -> FitResult:
    loss = client.task.evaluate(params, client.data.train).loss
    train = instructions.train
    lr = effective_lr(train, "q-FFL") if train.optimizer == "sgd" else train.lr
    result = fit(params, instructions)
    metrics = {**result.metrics, QFFL_LOSS.name: float(loss), QFFL_LIPSCHITZ.name: 1.0 / lr}
    return dataclasses.replace(result, metrics=metrics)


def qffl_client_step() -> ClientStep:
    """q-FFL's client half: report ``qffl_loss``, the loss at the global model before
    training, and ``qffl_lipschitz`` = 1/η, the paper's estimate of L."""
    return ClientStep("qffl", _qffl)


def qffl_aggregate(q: float) -> AggregateStep[EmptyState]:
    """The q-FFL update ``−Σ Δ_k / Σ h_k`` from each client's delta, loss and Lipschitz estimate."""

    def apply(
        updates: Sequence[Update] | WeightedSum, state: EmptyState, ctx: RoundContext
    ) -> tuple[Params, EmptyState]:
        if isinstance(updates, WeightedSum):
            raise TypeError("q-FedAvg needs each client's update and loss")
        chosen = sorted((u for u in updates if u.num_examples > 0), key=lambda u: u.client_id)
        if not chosen:
            return ctx.params.zeros_like(), state
        totals = {name: np.zeros(array.shape, np.float64) for name, array in ctx.params.items()}
        h_sum = 0.0
        for update in chosen:
            loss = max(update.metrics[QFFL_LOSS.name], LOSS_FLOOR)
            lipschitz = update.metrics[QFFL_LIPSCHITZ.name]
            # The client's delta is y - w, so dW = L (w - y) = -L * delta.
            squared = lipschitz**2 * update.delta.l2_norm() ** 2
            h_sum += q * loss ** (q - 1) * squared + lipschitz * loss**q
            for name, total in totals.items():
                total += loss**q * lipschitz * update.delta[name].astype(np.float64)
        return Params({name: (total / h_sum).astype(ctx.params[name].dtype) for name, total in totals.items()}), state

    return AggregateStep(
        init_empty,
        apply,
        "qffl",
        needs_updates=True,
        client=ClientHalf(steps=(qffl_client_step(),), metrics=(QFFL_LOSS, QFFL_LIPSCHITZ)),
    )


def qfedavg(q: float = 1.0) -> Strategy:
    """q-FedAvg: the q-FFL objective, solved with local SGD and a step set by Lipschitz estimates.

    Args:
        q: fairness strength >= 0; 0 is the plain mean of the updates, larger values favour
            the clients with the highest loss.

    Raises:
        ConfigError: if q is negative.

    Example:
        >>> import numpy as np
        >>> from sheaf.core.params import Params
        >>> from sheaf.core.update import Update
        >>> from sheaf.strategies.base import RoundContext
        >>> p = Params({"w": np.zeros(1)})
        >>> s = qfedavg(q=0.0)   # q = 0: the plain mean
        >>> ups = [Update(i, Params({"w": np.array([v])}), 1, {"qffl_loss": 1.0, "qffl_lipschitz": 10.0}) for i, v in enumerate([1.0, 3.0])]
        >>> s.aggregate(ups, s.init(p), RoundContext(1, p, 0, len(ups)))[0]["w"].round(4).tolist()
        [2.0]

    References:
        Li, Sanjabi, Beirami, Smith. Fair Resource Allocation in Federated Learning. ICLR 2020.
    """
    strength = real("qfedavg", "q", q, low=0)
    return chain(qffl_aggregate(strength), name="qfedavg")
