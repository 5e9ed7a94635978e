"""Server optimisers as server steps: momentum, Adam, Yogi and Adagrad on the aggregated delta.

The aggregated delta Δ (the clients' mean update) is treated as a pseudo-gradient pointing
downhill; the step returns the change to apply to the global model. The formulas are those
of Reddi et al. (2021), Algorithm 2, with no bias correction and ``v`` starting at ``tau²``:

- momentum (FedAvgM): ``m ← β m + Δ``; apply ``η m``;
- adaptive (FedAdagrad, FedYogi, FedAdam): ``m ← β₁ m + (1 − β₁) Δ`` and

  - Adagrad: ``v ← v + Δ²``
  - Yogi: ``v ← v − (1 − β₂) Δ² sign(v − Δ²)``
  - Adam: ``v ← β₂ v + (1 − β₂) Δ²``

  then apply ``η m / (√v + τ)``.

The moments are the step's state (stored with every round), kept in each parameter's
dtype; the arithmetic runs in float64.

``lr_decay`` (default 1: a constant η) decays the server learning rate by round: round ``t``
applies ``η · lr_decay^(t−1)`` (:func:`~sheaf.core.schedule.decayed_lr`, the formula clients'
rates decay by too), with ``t`` from the server's own round context (never from
anything a client sends), so a resumed run continues on the same schedule. This is the
server-side counterpart of ``train.lr_decay``; the FedOpt paper (Reddi et al. 2021) calls
it a server learning-rate schedule, and Flower has no built-in one (its ``FedAvgM`` and
``FedAdam`` keep ``server_learning_rate`` / ``eta`` constant).

Example:
    >>> import numpy as np
    >>> from sheaf.core.params import Params
    >>> from sheaf.strategies.base import RoundContext
    >>> p = Params({"w": np.zeros(1)})
    >>> step = server_momentum(lr=1.0, momentum=0.5)
    >>> ctx = RoundContext(1, p, 0, 1)
    >>> delta, state = step.apply(Params({"w": np.array([2.0])}), step.init(p), ctx)
    >>> delta, state = step.apply(Params({"w": np.array([2.0])}), state, ctx)
    >>> delta["w"].tolist(), state.momentum["w"].tolist()
    ([3.0], [3.0])

References:
    Reddi, Charles, Zaheer, Garrett, Rush, Konečný, Kumar, McMahan. Adaptive Federated
    Optimization. ICLR 2021.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

from sheaf.core.params import Params
from sheaf.core.schedule import decayed_lr
from sheaf.strategies.base import RoundContext, ServerStep

__all__ = ["AdaptiveState", "MomentumState", "server_adaptive", "server_momentum"]

F64 = npt.NDArray[np.float64]


class MomentumState(NamedTuple):
    """Server momentum: the running sum ``m`` of past deltas (decayed by the momentum)."""

    momentum: Params


class AdaptiveState(NamedTuple):
    """Adaptive server optimiser: first moment ``m`` and second moment ``v``."""

    m: Params
    v: Params


def server_momentum(lr: float, momentum: float, lr_decay: float = 1.0) -> ServerStep[MomentumState]:
    """Server SGD with heavy-ball momentum: ``m ← β m + Δ``, apply ``lr_t · m``.

    Args:
        lr: server learning rate η.
        momentum: β in [0, 1); 0 is plain server SGD (``lr = 1`` is FedAvg).
        lr_decay: round ``t`` applies ``lr_t = η · lr_decay^(t−1)`` (1: constant).

    References:
        Hsu, Qi, Brown. Measuring the Effects of Non-Identical Data Distribution for
        Federated Visual Classification. arXiv:1909.06335, 2019.
    """

    def init(params: Params) -> MomentumState:
        return MomentumState(params.zeros_like())

    def apply(delta: Params, state: MomentumState, ctx: RoundContext) -> tuple[Params, MomentumState]:
        m = _combine(state.momentum, delta, lambda m, d: momentum * m + d)
        eta = decayed_lr(lr, lr_decay, ctx.round)
        return _combine(m, m, lambda m, _: eta * m), MomentumState(m)

    return ServerStep(init, apply, "server_momentum")


_SECOND_MOMENT: dict[str, Callable[[F64, F64, float], F64]] = {
    "adagrad": lambda v, d2, beta2: v + d2,
    "yogi": lambda v, d2, beta2: v - (1 - beta2) * d2 * np.sign(v - d2),
    "adam": lambda v, d2, beta2: beta2 * v + (1 - beta2) * d2,
}


def server_adaptive(
    kind: str, *, lr: float, beta1: float, beta2: float, tau: float, lr_decay: float = 1.0
) -> ServerStep[AdaptiveState]:
    """An adaptive server optimiser from Reddi et al.'s Algorithm 2 (no bias correction).

    Args:
        kind: ``adam``, ``yogi`` or ``adagrad`` (the second-moment rule).
        lr: server learning rate η.
        beta1: first-moment decay β₁ in [0, 1).
        beta2: second-moment decay β₂ in [0, 1) (unused by Adagrad).
        tau: adaptivity τ > 0: added to √v, and ``v`` starts at ``tau²``.
        lr_decay: round ``t`` applies ``η · lr_decay^(t−1)`` (1: constant).

    Raises:
        ValueError: for an unknown kind (a programming error; factories check settings).

    References:
        Reddi et al. Adaptive Federated Optimization. ICLR 2021, Algorithm 2.
    """
    if kind not in _SECOND_MOMENT:
        raise ValueError(f"unknown adaptive optimiser {kind!r}")
    second = _SECOND_MOMENT[kind]

    def init(params: Params) -> AdaptiveState:
        return AdaptiveState(params.zeros_like(), params.map(lambda a: np.full_like(a, tau * tau)))

    def apply(delta: Params, state: AdaptiveState, ctx: RoundContext) -> tuple[Params, AdaptiveState]:
        m = _combine(state.m, delta, lambda m, d: beta1 * m + (1 - beta1) * d)
        v = _combine(state.v, delta, lambda v, d: second(v, d * d, beta2))
        eta = decayed_lr(lr, lr_decay, ctx.round)
        step = Params(
            {
                name: (eta * m[name].astype(np.float64) / (np.sqrt(v[name].astype(np.float64)) + tau)).astype(
                    delta[name].dtype
                )
                for name in delta
            }
        )
        return step, AdaptiveState(m, v)

    return ServerStep(init, apply, f"server_{kind}")


def _combine(state: Params, delta: Params, fn: Callable[[F64, F64], Any]) -> Params:
    """``fn`` of a state tensor and a delta tensor, in float64, cast back to the state's dtype."""
    return Params(
        {
            name: np.asarray(fn(s.astype(np.float64), delta[name].astype(np.float64))).astype(s.dtype)
            for name, s in state.items()
        }
    )
