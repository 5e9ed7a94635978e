"""Population: which clients a run has, which it evaluates, and its central test set.

The round loop needs three facts about the clients, whatever runs them: who is
registered (cohorts are sampled from them), whose local test split the global model is
evaluated on, and — if the server has one — a central test set. A simulation takes them
from its :class:`~sheaf.data.dataset.Federation`; a deployment server from the clients it
has authorised (it holds no data, so usually no central test set).

Cohorts are sampled by *position* in the sorted client ids, from (seed, round) only, so
the cohort of a round never depends on which clients happen to be connected, and a
federation's clients ``0..n-1`` give exactly the cohorts of a plain simulation. A deployed
server's population holds its run secret instead: its cohorts come from (secret, round),
which no client can compute (:func:`~sheaf.core.sampling.secret_cohort`).

Example:
    >>> import numpy as np
    >>> pop = Population(client_ids=(3, 7, 9), evaluation_clients=(3, 9))
    >>> pop.num_clients, pop.cohort(2, seed=0, round=1)
    (3, [3, 9])
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from sheaf.core.errors import ConfigError
from sheaf.core.sampling import sample_cohort, secret_cohort
from sheaf.data.dataset import Federation, Split

__all__ = ["Population"]


@dataclass(frozen=True)
class Population:
    """The clients of a run as the round loop sees them.

    Attributes:
        client_ids: every registered client id, increasing and distinct.
        evaluation_clients: the clients asked to evaluate the global model on their local
            test splits (a subset of ``client_ids``).
        central_test: the server's own held-out data, or None when it has none.
        secret: a deployed server's run secret: cohorts are drawn from it, not from the
            seed (empty: seeded cohorts, a simulation's).

    Raises:
        ConfigError: if the ids are empty, unsorted or repeated, or an evaluation client is
            not registered.
    """

    client_ids: tuple[int, ...]
    evaluation_clients: tuple[int, ...] = ()
    central_test: Split | None = None
    secret: bytes = field(default=b"", repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.client_ids:
            raise ConfigError("a run needs at least one registered client")
        # numpy, not Python loops: a simulation may register a million clients
        ids = np.asarray(self.client_ids, dtype=np.int64)
        if np.any(ids[1:] <= ids[:-1]):
            raise ConfigError(f"client ids must be distinct and increasing, got {list(self.client_ids)[:10]}")
        testers = np.asarray(self.evaluation_clients, dtype=np.int64)
        unknown = testers[~np.isin(testers, ids)]
        if len(unknown):
            raise ConfigError(f"evaluation clients {sorted(set(unknown.tolist()))[:10]} are not registered clients")

    @classmethod
    def of(cls, federation: Federation) -> Population:
        """A simulation's population: clients ``0..n-1``; those with local test rows evaluate."""
        testers = tuple(np.flatnonzero(np.asarray(federation.test_counts) > 0).tolist())
        return cls(tuple(range(federation.num_clients)), testers, federation.central_test)

    @property
    def num_clients(self) -> int:
        """How many clients are registered."""
        return len(self.client_ids)

    def cohort(self, size: int, *, seed: int, round: int, rate: float | None = None) -> list[int]:
        """The ``size`` clients sampled for ``round``, in increasing id order.

        With ``rate`` (Poisson sampling) each client is included with that probability and
        ``size`` is ignored (:func:`~sheaf.core.sampling.sample_cohort`). With a
        :attr:`secret`, ``seed`` is not used.
        """
        if self.secret:
            positions = secret_cohort(self.num_clients, size, secret=self.secret, round=round, rate=rate)
        else:
            positions = sample_cohort(self.num_clients, size, seed=seed, round=round, rate=rate)
        return [self.client_ids[int(p)] for p in positions]
