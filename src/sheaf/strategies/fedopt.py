"""FedOpt: FedAvg's weighted mean followed by a server optimiser (Reddi et al. 2021).

``fedavgm``, ``fedadam``, ``fedyogi`` and ``fedadagrad`` are ``chain(weighted_mean(),
server_...)``: the clients train as in FedAvg; the server treats the mean update as a
pseudo-gradient and steps with momentum or an adaptive rule. The moments are strategy
state, stored with every round, so a resumed run continues exactly.

They follow Algorithm 2 of the paper: no bias correction, ``v`` starts at ``tau²``.
Flower's ``FedAdam`` instead starts ``v`` at zero and scales η by a bias correction whose
round index is shifted by one (``sqrt(1 - β₂^(t+1)) / (1 - β₁^(t+1))``), with τ = 1e-9;
the two give different models.

Example:
    >>> import numpy as np
    >>> from sheaf.core.params import Params
    >>> from sheaf.core.update import Update
    >>> from sheaf.strategies.base import RoundContext
    >>> s = fedadam(lr=0.1, tau=0.01)
    >>> p = Params({"w": np.zeros(1)})
    >>> new, state, _ = s.aggregate([Update(0, Params({"w": np.array([1.0])}), 1)], s.init(p), RoundContext(1, p, 0, 1))
    >>> round(float(new["w"][0]), 4)   # 0.1 * 0.1 / (sqrt(0.99e-4 + 0.01) + 0.01)
    0.0905
"""

from __future__ import annotations

from sheaf.strategies._hyper import real
from sheaf.strategies.aggregate import weighted_mean
from sheaf.strategies.base import Strategy, chain
from sheaf.strategies.server_opt import server_adaptive, server_momentum

__all__ = ["fedadagrad", "fedadam", "fedavgm", "fedyogi"]


def fedavgm(lr: float = 1.0, momentum: float = 0.9, lr_decay: float = 1.0) -> Strategy:
    """FedAvg with server momentum: ``m ← β m + Δ``, new params = params + η_t m.

    Args:
        lr: server learning rate η > 0.
        momentum: server momentum β in [0, 1) (0 with ``lr = 1`` is FedAvg).
        lr_decay: server learning-rate decay in (0, 1]: round ``t`` steps with
            ``η_t = lr · lr_decay^(t−1)`` (1, the default: a constant η).

    Raises:
        ConfigError: if a hyperparameter is out of range.

    Example:
        >>> import numpy as np
        >>> from sheaf.core.params import Params
        >>> from sheaf.core.update import Update
        >>> from sheaf.strategies.base import RoundContext
        >>> p = Params({"w": np.zeros(1)})
        >>> s = fedavgm(lr=1.0, momentum=0.9)
        >>> ups = [Update(i, Params({"w": np.array([v])}), 1) for i, v in enumerate([1.0, 3.0])]
        >>> s.aggregate(ups, s.init(p), RoundContext(1, p, 0, len(ups)))[0]["w"].round(4).tolist()
        [2.0]

    References:
        Hsu, Qi, Brown. Measuring the Effects of Non-Identical Data Distribution for
        Federated Visual Classification. arXiv:1909.06335, 2019. Reddi et al. Adaptive
        Federated Optimization. ICLR 2021.
    """
    eta = real("fedavgm", "lr", lr, low=0, low_open=True)
    beta = real("fedavgm", "momentum", momentum, low=0, high=1, high_open=True)
    decay = real("fedavgm", "lr_decay", lr_decay, low=0, high=1, low_open=True)
    return chain(weighted_mean(), server_momentum(eta, beta, decay), name="fedavgm")


def _adaptive(
    name: str, kind: str, lr: float, beta1: float, beta2: float, tau: float, lr_decay: float = 1.0
) -> Strategy:
    step = server_adaptive(
        kind,
        lr=real(name, "lr", lr, low=0, low_open=True),
        beta1=real(name, "beta1", beta1, low=0, high=1, high_open=True),
        beta2=real(name, "beta2", beta2, low=0, high=1, high_open=True),
        tau=real(name, "tau", tau, low=0, low_open=True),
        lr_decay=real(name, "lr_decay", lr_decay, low=0, high=1, low_open=True),
    )
    return chain(weighted_mean(), step, name=name)


def fedadam(
    lr: float = 0.03, beta1: float = 0.9, beta2: float = 0.99, tau: float = 1e-3, lr_decay: float = 1.0
) -> Strategy:
    """FedAdam: the mean update as a pseudo-gradient for server Adam (no bias correction).

    Args:
        lr: server learning rate η > 0 (the paper tunes it per task; 0.03 was best for the
            built-in MLP on digits, see docs/strategies.md).
        beta1: first-moment decay β₁ in [0, 1).
        beta2: second-moment decay β₂ in [0, 1).
        tau: adaptivity τ > 0.
        lr_decay: server learning-rate decay in (0, 1]: round ``t`` uses
            ``lr · lr_decay^(t−1)`` (1, the default: a constant η).

    Raises:
        ConfigError: if a hyperparameter is out of range.

    Example:
        >>> import numpy as np
        >>> from sheaf.core.params import Params
        >>> from sheaf.core.update import Update
        >>> from sheaf.strategies.base import RoundContext
        >>> p = Params({"w": np.zeros(1)})
        >>> s = fedadam(lr=0.1, tau=0.01)
        >>> ups = [Update(i, Params({"w": np.array([v])}), 1) for i, v in enumerate([1.0, 1.0])]
        >>> s.aggregate(ups, s.init(p), RoundContext(1, p, 0, len(ups)))[0]["w"].round(4).tolist()
        [0.0905]

    References:
        Reddi et al. Adaptive Federated Optimization. ICLR 2021, Algorithm 2.
    """
    return _adaptive("fedadam", "adam", lr, beta1, beta2, tau, lr_decay)


def fedyogi(
    lr: float = 0.03, beta1: float = 0.9, beta2: float = 0.99, tau: float = 1e-3, lr_decay: float = 1.0
) -> Strategy:
    """FedYogi: like FedAdam, but ``v`` moves by ``(1 − β₂) Δ²`` towards ``Δ²`` (additively).

    Args:
        lr: server learning rate η > 0.
        beta1: first-moment decay β₁ in [0, 1).
        beta2: second-moment rate β₂ in [0, 1).
        tau: adaptivity τ > 0.
        lr_decay: server learning-rate decay in (0, 1]: round ``t`` uses
            ``lr · lr_decay^(t−1)`` (1, the default: a constant η).

    Raises:
        ConfigError: if a hyperparameter is out of range.

    Example:
        >>> import numpy as np
        >>> from sheaf.core.params import Params
        >>> from sheaf.core.update import Update
        >>> from sheaf.strategies.base import RoundContext
        >>> p = Params({"w": np.zeros(1)})
        >>> s = fedyogi(lr=0.1, tau=0.01)
        >>> ups = [Update(i, Params({"w": np.array([v])}), 1) for i, v in enumerate([1.0, 1.0])]
        >>> s.aggregate(ups, s.init(p), RoundContext(1, p, 0, len(ups)))[0]["w"].round(4).tolist()   # v = 1e-4 + 0.01 * 1
        [0.0905]

    References:
        Reddi et al. Adaptive Federated Optimization. ICLR 2021, Algorithm 2; Zaheer et al.
        Adaptive Methods for Nonconvex Optimization. NeurIPS 2018.
    """
    return _adaptive("fedyogi", "yogi", lr, beta1, beta2, tau, lr_decay)


def fedadagrad(lr: float = 0.1, beta1: float = 0.0, tau: float = 1e-3, lr_decay: float = 1.0) -> Strategy:
    """FedAdagrad: ``v ← v + Δ²``, new params = params + η m / (√v + τ).

    Args:
        lr: server learning rate η > 0.
        beta1: first-moment decay β₁ in [0, 1); 0 (the default) is plain Adagrad.
        tau: adaptivity τ > 0.
        lr_decay: server learning-rate decay in (0, 1]: round ``t`` uses
            ``lr · lr_decay^(t−1)`` (1, the default: a constant η).

    Raises:
        ConfigError: if a hyperparameter is out of range.

    Example:
        >>> import numpy as np
        >>> from sheaf.core.params import Params
        >>> from sheaf.core.update import Update
        >>> from sheaf.strategies.base import RoundContext
        >>> p = Params({"w": np.zeros(1)})
        >>> s = fedadagrad(lr=0.1, tau=0.01)
        >>> ups = [Update(i, Params({"w": np.array([v])}), 1) for i, v in enumerate([1.0, 1.0])]
        >>> s.aggregate(ups, s.init(p), RoundContext(1, p, 0, len(ups)))[0]["w"].round(4).tolist()   # 0.1 * 1 / (sqrt(1e-4 + 1) + 0.01)
        [0.099]

    References:
        Reddi et al. Adaptive Federated Optimization. ICLR 2021, Algorithm 2.
    """
    return _adaptive("fedadagrad", "adagrad", lr, beta1, 0.0, tau, lr_decay)
