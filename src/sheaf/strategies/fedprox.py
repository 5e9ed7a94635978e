"""FedProx: FedAvg whose clients add a proximal term that keeps them near the global model.

Example:
    >>> s = fedprox(mu=0.01)
    >>> s.name, s.client_options
    ('fedprox', {'proximal_mu': 0.01})
"""

from __future__ import annotations

from sheaf.core.errors import ConfigError
from sheaf.strategies.aggregate import weighted_mean
from sheaf.strategies.base import Strategy, chain

__all__ = ["fedprox"]


def fedprox(mu: float = 0.01) -> Strategy:
    """FedAvg with a proximal term ``(mu / 2) * ||w - w_global||^2`` in every client's loss.

    The server aggregates exactly as FedAvg; the clients receive ``proximal_mu`` and add the
    term's gradient ``mu * (w - w_global)`` at every local step, which limits client drift on
    non-IID data. ``mu = 0`` is FedAvg.

    Args:
        mu: strength of the proximal term, >= 0 (the paper tries 0.001 to 1).

    Raises:
        ConfigError: if mu is negative.

    References:
        Li, Sahu, Zaheer, Sanjabi, Talwalkar, Smith. Federated Optimization in Heterogeneous
        Networks. MLSys 2020.
    """
    if mu < 0:
        raise ConfigError(f"strategy.mu must be >= 0 for FedProx, got {mu}")
    return chain(weighted_mean(), name="fedprox", client_options={"proximal_mu": float(mu)})
