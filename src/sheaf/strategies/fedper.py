"""FedPer: a shared body averaged by the server, and a personal head that stays on each client.

The ``fedper`` client step (:mod:`sheaf.task.personal_steps`) trains the global body with
the client's own head (its client state; the global head the first time it trains), keeps
the trained head and sends a delta whose head part is zero. The server is FedAvg's
weighted mean, so the global head stays at its initial value and only the body learns —
which also keeps FedPer a sum-only strategy (secure aggregation can carry it).

The global model alone is therefore not what a FedPer client uses: the round loop's
personalised evaluation (``docs/strategies.md``) evaluates each client with the global body
and its own head, beside the global model.

Example:
    >>> s = fedper(head="3.")
    >>> s.client_options["client_steps"], s.client_options["fedper_head"], s.needs_updates
    ('fedper', '3.', False)

References:
    Arivazhagan, Aggarwal, Singh, Choudhary. Federated Learning with Personalization
    Layers. arXiv:1912.00818, 2019.
"""

from __future__ import annotations

from sheaf.core.errors import ConfigError
from sheaf.strategies.aggregate import weighted_mean
from sheaf.strategies.base import Strategy, chain

__all__ = ["fedper"]


def fedper(head: str = "") -> Strategy:
    """FedPer: FedAvg on the base layers; the personalisation layers stay on each client.

    Args:
        head: comma-separated name prefixes of the personal tensors (e.g. ``"3."`` for the
            built-in MLP's last layer); empty (the default) takes the model's last layer.

    Raises:
        ConfigError: if head is not a string.

    Example:
        >>> fedper().client_options
        {'client_steps': 'fedper', 'fedper_head': ''}

    References:
        Arivazhagan, Aggarwal, Singh, Choudhary. Federated Learning with Personalization
        Layers. arXiv:1912.00818, 2019.
    """
    if not isinstance(head, str):
        raise ConfigError(f"strategy.head must be a string of name prefixes for fedper, got {head!r}")
    return chain(weighted_mean(), name="fedper", client_options={"client_steps": "fedper", "fedper_head": head})
