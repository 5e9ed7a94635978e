"""Client sampling: which clients train in a round.

In a simulation the cohort depends only on (run seed, round), and costs time in proportion
to the cohort, not the population (NumPy draws a small sample from a large range without
touching it): :func:`sample_cohort`.

In a deployment it depends only on (the server's run secret, round) —
:func:`secret_cohort`, from a keyed ChaCha20 stream (:mod:`sheaf.core.keyed`) — so a
client, which never sees the secret, learns nothing but its own participation, while a
resumed server draws the same cohorts. The same distributions: ``size`` distinct clients
uniformly (fixed), or every client independently with probability ``rate`` (Poisson); it
draws one 64-bit number per registered client, a vectorised pass of a few milliseconds per
100,000 clients.

Example:
    >>> cohort_size(population=20, fraction=0.5, min_clients=2)
    10
    >>> sample_cohort(20, 10, seed=0, round=1).tolist() == sample_cohort(20, 10, seed=0, round=1).tolist()
    True
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from sheaf.core.errors import ConfigError
from sheaf.core.keyed import keyed_stream
from sheaf.core.rng import Purpose, stream

__all__ = ["cohort_size", "sample_cohort", "secret_cohort"]


def cohort_size(population: int, fraction: float, min_clients: int) -> int:
    """How many clients a round samples: ``max(min_clients, ceil(fraction * population))``.

    Raises:
        ConfigError: if the fraction is outside (0, 1] or min_clients exceeds the population.
    """
    if not 0 < fraction <= 1:
        raise ConfigError(f"strategy.fraction must be in (0, 1], got {fraction}")
    if min_clients > population:
        raise ConfigError(
            f"strategy.min_clients ({min_clients}) exceeds the number of clients ({population}); "
            f"lower it to at most {population}"
        )
    return min(population, max(min_clients, math.ceil(fraction * population - 1e-9)))


def sample_cohort(
    population: int, size: int, *, seed: int, round: int, rate: float | None = None
) -> npt.NDArray[np.int64]:
    """Sample ``size`` distinct client ids uniformly from ``range(population)``, sorted.

    With ``rate`` (``strategy.sampling = "poisson"``) every client is instead included
    independently with probability ``rate``, and ``size`` is ignored: the cohort's size is
    drawn from Binomial(population, rate), then that many distinct clients uniformly — the
    same distribution as one coin per client, in time proportional to the cohort. This is
    the sampling the privacy accountant's amplification by sampling assumes.

    Example:
        >>> ids = sample_cohort(1000, 0, seed=0, round=1, rate=0.05)
        >>> 20 <= len(ids) <= 80, bool((ids[1:] > ids[:-1]).all())
        (True, True)
    """
    rng = stream(seed, Purpose.SAMPLE, round=round)
    if rate is not None:
        count = int(rng.binomial(population, rate))
        return np.sort(rng.choice(population, size=count, replace=False)).astype(np.int64)
    if size >= population:
        return np.arange(population, dtype=np.int64)
    return np.sort(rng.choice(population, size=size, replace=False)).astype(np.int64)


def secret_cohort(
    population: int, size: int, *, secret: bytes, round: int, rate: float | None = None
) -> npt.NDArray[np.int64]:
    """Like :func:`sample_cohort`, from the run secret instead of the seed (deployment).

    Fixed-size cohorts are the ``size`` clients with the smallest of one uniform 64-bit key
    each (a uniformly random subset, up to ties of probability below 2**-64 per pair);
    Poisson cohorts keep each client whose uniform number in [0, 1) is below ``rate``.

    Example:
        >>> ids = secret_cohort(1000, 10, secret=bytes(32), round=1)
        >>> len(ids), ids.tolist() == secret_cohort(1000, 10, secret=bytes(32), round=1).tolist()
        (10, True)
    """
    draws = keyed_stream(secret, "cohort", round=round)
    if rate is not None:
        return np.flatnonzero(draws.uniform(population) < rate).astype(np.int64)
    if size >= population:
        return np.arange(population, dtype=np.int64)
    keys = draws.uint64(population)
    return np.sort(np.argpartition(keys, size)[:size]).astype(np.int64)
