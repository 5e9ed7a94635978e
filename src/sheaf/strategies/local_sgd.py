"""What SCAFFOLD, FedNova and q-FFL assume of a client's local training: SGD, and its step count.

Their client halves turn what the client did into what the server needs: SCAFFOLD's
control variate divides by ``K η``, FedNova reports how many gradients its update sums,
q-FFL estimates a Lipschitz constant from ``η``. With heavy-ball momentum ρ a local SGD
step moves ``η/(1 − ρ)`` times the gradient once the momentum has built up, so they use
that effective learning rate; with ρ = 0 it is the papers' η exactly. With Adam there is
no such rate: SCAFFOLD and FedNova refuse to run (the client fails with a message saying
so).

Example:
    >>> from sheaf.core.config import TrainConfig
    >>> effective_lr(TrainConfig(lr=0.1, momentum=0.5), "SCAFFOLD")
    0.2
"""

from __future__ import annotations

from sheaf.core.config import TrainConfig
from sheaf.core.errors import TaskError
from sheaf.task.base import FitResult

__all__ = ["effective_lr", "reported_steps"]


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
