"""One instance of SecAgg+: who takes part, who is whose neighbour, and how many must survive.

In SecAgg (Bonawitz et al. 2017) every client shares its secrets with, and masks against,
every other client: n - 1 peers each. SecAgg+ (Bell et al. 2020) replaces the complete
graph with a random k-regular graph of degree ``k = O(log n)``: a client masks only
against its neighbours and shares its secrets only with them, so its work and traffic grow
with ``log n``, not ``n``. The graph is a Harary graph — clients on a ring, each joined to
the ``k / 2`` nearest on either side — over a random order of the clients drawn from a seed
only the server holds (a simulation derives it from the run seed); every client computes
its own neighbours from the same seed.

Thresholds:

- ``threshold`` (t): a client's two secrets (its self-mask seed and its pairwise mask key)
  are Shamir-shared among its neighbours with threshold t: the server learns a secret
  only from t shares, and no honest client ever sends both kinds for the same peer;
- ``min_survivors`` (T = t + 1): the server aborts a stage that fewer than T clients get
  through, and an honest client refuses to help unmask a sum of fewer than T inputs. With
  the complete graph (``k = n - 1``) any T survivors hold at least t shares of everyone's
  secrets, so every dropout pattern that leaves T clients at every stage is recovered;
  with a sparse graph, a round in which some client keeps fewer than t live neighbours
  aborts (Bell et al. choose k so that this is unlikely at the expected dropout rate).

:func:`degree_for` picks ``k``: the smallest even degree for which, with every client
dropping out independently with probability ``max_dropout`` (default 0.1), a round fails
with probability at most 2**-20 per cohort — it fails if some client keeps fewer than t
live neighbours, or if ``k / 2`` consecutive clients of the ring drop out (the survivors'
graph could then split, and the server would learn the sum of each part); the complete
graph when no smaller degree does (small cohorts, or high dropout rates). At the default
threshold (half the neighbours) that is 30 at n = 100 and 200, 46 at n = 10^6 —
``O(log n)``; planning for 30% dropouts takes 184 at n = 200.

Example:
    >>> setup = protocol_setup(range(10), instance=bytes(16), graph_seed=3, bits=32, length=5)
    >>> setup.degree, setup.threshold, setup.min_survivors
    (9, 5, 6)
    >>> setup.neighbours(4)
    (0, 1, 2, 3, 5, 6, 7, 8, 9)

References:
    Bonawitz, Ivanov, Kreuter, Marcedone, McMahan, Patel, Ramage, Segal, Seth. Practical
    Secure Aggregation for Privacy-Preserving Machine Learning. CCS 2017. Bell, Bonawitz,
    Gascón, Lepoint, Raykova. Secure Single-Server Aggregation with (Poly)Logarithmic
    Overhead. CCS 2020. Harary. The Maximum Connectivity of a Graph. PNAS 1962.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from sheaf.core.errors import SecAggError
from sheaf.quantize.quantizer import MAX_BITS

__all__ = ["GRAPH_FAILURE", "INSTANCE_BYTES", "ProtocolSetup", "degree_for", "protocol_setup"]

#: The probability per round with which the chosen degree may fail to recover (or to keep
#: the survivors connected) at the planned dropout rate.
GRAPH_FAILURE = 2.0**-20
#: Bytes of an instance identifier (fresh for every execution; binds every key and share to it).
INSTANCE_BYTES = 16


def _binomial_below(trials: int, p: float, cut: int) -> float:
    """P(Binomial(trials, p) < cut)."""
    return sum(math.comb(trials, i) * p**i * (1 - p) ** (trials - i) for i in range(max(cut, 0)))


def degree_for(clients: int, threshold_fraction: float = 0.5, max_dropout: float = 0.1) -> int:
    """The neighbour degree k for ``clients`` clients (see the module docstring).

    Example:
        >>> [degree_for(n) for n in (5, 50, 100, 200, 10**6)]
        [4, 28, 30, 30, 46]
        >>> degree_for(200, max_dropout=0.3)
        184
    """
    for k in range(2, clients - 1, 2):
        t = max(1, math.ceil(threshold_fraction * k))
        short = clients * _binomial_below(k, 1 - max_dropout, t)
        split = clients * max_dropout ** (k // 2)
        if short <= GRAPH_FAILURE and split <= GRAPH_FAILURE:
            return k
    return max(clients - 1, 0)


@dataclass(frozen=True)
class ProtocolSetup:
    """What every party of one SecAgg+ instance agrees on.

    Attributes:
        instance: fresh random bytes naming this execution (every derived key and every
            signed or encrypted message is bound to them).
        clients: the cohort's client ids, increasing.
        degree: neighbours per client (k; ``len(clients) - 1`` for the complete graph).
        threshold: shares needed to rebuild a client's secret (t).
        min_survivors: the fewest clients any stage may end with (T).
        bits: the ring is Z_{2**bits}.
        length: ring elements per masked input.
        graph_seed: the seed of the neighbour graph's random order.
    """

    instance: bytes
    clients: tuple[int, ...]
    degree: int
    threshold: int
    min_survivors: int
    bits: int
    length: int
    graph_seed: int
    _positions: dict[int, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        n = len(self.clients)
        if len(self.instance) != INSTANCE_BYTES:
            raise SecAggError(f"a protocol instance is named by {INSTANCE_BYTES} bytes, got {len(self.instance)}")
        if list(self.clients) != sorted(set(self.clients)) or any(c < 0 or c >= 2**62 for c in self.clients):
            raise SecAggError("a protocol's clients must be distinct ids in increasing order")
        if n < 2:
            raise SecAggError(f"secure aggregation needs at least 2 clients, got {n}")
        if not (2 <= self.degree <= n - 1 and (self.degree == n - 1 or self.degree % 2 == 0)):
            raise SecAggError(f"neighbour degree must be even and in 2..{n - 1} (or {n - 1}), got {self.degree}")
        if not 1 <= self.threshold <= self.degree:
            raise SecAggError(f"threshold must be in 1..{self.degree} (the degree), got {self.threshold}")
        if not self.threshold + 1 <= self.min_survivors <= n:
            raise SecAggError(f"min_survivors must be in {self.threshold + 1}..{n}, got {self.min_survivors}")
        if not 2 <= self.bits <= MAX_BITS or not 1 <= self.length <= 1 << 30:
            raise SecAggError(f"ring of {self.bits} bits and length {self.length} is out of range")
        order = np.random.Generator(np.random.PCG64(np.random.SeedSequence(self.graph_seed))).permutation(n)
        object.__setattr__(self, "_positions", {self.clients[int(i)]: p for p, i in enumerate(order)})

    @property
    def complete(self) -> bool:
        """Whether every client is every other's neighbour (SecAgg without the plus)."""
        return self.degree == len(self.clients) - 1

    @cached_property
    def _ring(self) -> tuple[int, ...]:
        ring = [0] * len(self.clients)
        for client, position in self._positions.items():
            ring[position] = client
        return tuple(ring)

    def connected(self, survivors: Iterable[int]) -> bool:
        """Whether ``survivors`` form one connected piece of the neighbour graph.

        Honest clients sign a survivors list only if it does: otherwise the pairwise masks
        of each piece would cancel within it, and the server would learn the sum of every
        piece rather than only of all of them (a lone survivor's input, at worst).
        """
        alive = set(survivors)
        if self.complete or len(alive) <= 1:
            return True
        start = min(alive)
        seen, frontier = {start}, [start]
        while frontier:
            here = frontier.pop()
            for there in self.neighbours(here):
                if there in alive and there not in seen:
                    seen.add(there)
                    frontier.append(there)
        return seen == alive

    def neighbours(self, client: int) -> tuple[int, ...]:
        """The client's neighbours, increasing.

        Raises:
            SecAggError: if ``client`` is not in the cohort.
        """
        if client not in self._positions:
            raise SecAggError(f"client {client} is not in this protocol's cohort")
        if self.complete:
            return tuple(c for c in self.clients if c != client)
        n, here, half = len(self.clients), self._positions[client], self.degree // 2
        return tuple(sorted(self._ring[(here + step) % n] for step in (*range(-half, 0), *range(1, half + 1))))


def protocol_setup(
    clients: Iterable[int],
    *,
    instance: bytes,
    graph_seed: int,
    bits: int,
    length: int,
    threshold_fraction: float = 0.5,
    max_dropout: float = 0.1,
    degree: int = 0,
) -> ProtocolSetup:
    """The setup for ``clients``: degree from :func:`degree_for` (unless given), threshold
    ``t = ceil(threshold_fraction * k)``, and ``T = t + 1`` survivors at least.

    Raises:
        SecAggError: on fewer than 3 clients or parameters out of range.
    """
    cohort = tuple(sorted(clients))
    n = len(cohort)
    if n < 3:
        raise SecAggError(
            f"secure aggregation needs at least 3 clients (a sum of 2 reveals each to the other), got {n}"
        )
    if not 0 < threshold_fraction < 1:
        raise SecAggError(f"threshold fraction must be in (0, 1), got {threshold_fraction}")
    if not 0 <= max_dropout < 1:
        raise SecAggError(f"planned dropout rate must be in [0, 1), got {max_dropout}")
    k = degree or degree_for(n, threshold_fraction, max_dropout)
    t = max(1, math.ceil(threshold_fraction * k))
    return ProtocolSetup(instance, cohort, k, t, t + 1, bits, length, graph_seed)
