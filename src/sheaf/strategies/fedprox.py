"""FedProx: FedAvg whose clients add a proximal term that keeps them near the global model.

The proximal term lives entirely on the clients: :func:`proximal_term` is a step whose
server half is the identity and whose client half sends ``proximal_mu``, which
:class:`~sheaf.task.TorchTask`'s standard loop (and the vectorized backend) turn into the
term's gradient ``mu * (w - w_global)`` at every local step.

Example:
    >>> s = fedprox(mu=0.01)
    >>> s.name, dict(s.client_options)
    ('fedprox', {'proximal_mu': 0.01})
"""

from __future__ import annotations

from sheaf.core.errors import ConfigError
from sheaf.strategies.aggregate import weighted_mean
from sheaf.strategies.base import ClientHalf, EmptyState, ServerStep, Strategy, chain, client_side

__all__ = ["PROXIMAL_MU", "fedprox", "proximal_term"]

#: The option carrying the proximal strength to the clients.
PROXIMAL_MU = "proximal_mu"


def proximal_term(mu: float) -> ServerStep[EmptyState]:
    """Clients add ``(mu / 2) * ||w - w_global||^2`` to their loss; the server changes nothing.

    Raises:
        ConfigError: if mu is negative.
    """
    if mu < 0:
        raise ConfigError(f"strategy.mu must be >= 0 for FedProx, got {mu}")
    return client_side("proximal_term", ClientHalf(options={PROXIMAL_MU: float(mu)}))


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
    return chain(weighted_mean(), proximal_term(mu), name="fedprox")
