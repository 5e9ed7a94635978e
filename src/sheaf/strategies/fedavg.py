"""FedAvg: the weighted mean of the clients' updates.

Example:
    >>> fedavg().name, fedavg().needs_updates
    ('fedavg', False)
"""

from __future__ import annotations

from sheaf.strategies.aggregate import weighted_mean
from sheaf.strategies.base import Strategy, chain

__all__ = ["fedavg"]


def fedavg() -> Strategy:
    """Federated Averaging: new params = params + mean of deltas weighted by examples.

    References:
        McMahan, Moore, Ramage, Hampson, Agüera y Arcas. Communication-Efficient Learning
        of Deep Networks from Decentralized Data. AISTATS 2017.
    """
    return chain(weighted_mean(), name="fedavg")
