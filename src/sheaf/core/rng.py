"""Deterministic random streams derived from (run seed, purpose, round, client id).

Every random choice in sheaf — cohort sampling, data partitioning, parameter init, the
shuffles of a client's local training, simulated noise — draws from its own stream. A
stream depends only on *what* it is for, never on the order in which work happens, so a
client trains the same way whether it runs first or last, in this process or another.

Example:
    >>> a = stream(42, Purpose.FIT, round=3, client=7).random()
    >>> b = stream(42, Purpose.FIT, round=3, client=7).random()
    >>> a == b, a == stream(42, Purpose.FIT, round=3, client=8).random()
    (True, False)
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import IntEnum

import numpy as np
import numpy.typing as npt

from sheaf.core import _seedseq

__all__ = ["Purpose", "counter_uniforms", "seed_for", "seeds_for", "stream"]

_NO_ROUND = 0
_NO_CLIENT = 0


class Purpose(IntEnum):
    """What a random stream is used for. Values are part of the run format: never reuse."""

    PARTITION = 1
    SPLIT = 2
    INIT = 3
    SAMPLE = 4
    FIT = 5
    EVALUATE = 6
    NOISE = 7
    ATTACK = 8
    STRATEGY = 9
    LOCAL_SPLIT = 10
    SECAGG = 11
    DEVICES = 12
    ASYNC = 13
    COMPRESS = 14


def _sequence(seed: int, purpose: Purpose, round: int | None, client: int | None) -> np.random.SeedSequence:
    # Round and client are offset by one so that "none" (0) never collides with round 0
    # or client 0.
    key = (
        int(purpose),
        _NO_ROUND if round is None else round + 1,
        _NO_CLIENT if client is None else client + 1,
    )
    return np.random.SeedSequence(entropy=seed, spawn_key=key)


def stream(seed: int, purpose: Purpose, *, round: int | None = None, client: int | None = None) -> np.random.Generator:
    """A NumPy generator for one (seed, purpose, round, client) combination.

    Args:
        seed: the run seed (a non-negative integer).
        purpose: what the stream is for; different purposes never share a stream.
        round: the round number, if the stream belongs to one.
        client: the client id, if the stream belongs to one.

    Returns:
        A fresh ``numpy.random.Generator`` (PCG64) in the same state every time.
    """
    return np.random.Generator(np.random.PCG64(_sequence(seed, purpose, round, client)))


def seed_for(seed: int, purpose: Purpose, *, round: int | None = None, client: int | None = None) -> int:
    """A 63-bit integer seed for libraries that want one (e.g. ``torch.manual_seed``)."""
    state = _sequence(seed, purpose, round, client).generate_state(2, dtype=np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


def seeds_for(seed: int, purpose: Purpose, *, round: int, clients: Sequence[int]) -> list[int]:
    """``seed_for(seed, purpose, round=round, client=c)`` for every client, computed at once.

    The same values, about a hundred times faster for a cohort (see ``sheaf.core._seedseq``).

    Example:
        >>> seeds_for(7, Purpose.FIT, round=2, clients=[0, 5]) == [
        ...     seed_for(7, Purpose.FIT, round=2, client=0), seed_for(7, Purpose.FIT, round=2, client=5)]
        True
    """
    ids = np.asarray(clients, dtype=np.int64) + 1
    if len(ids) == 0:
        return []
    if ids.min() < 1 or ids.max() > 0xFFFFFFFF or round + 1 > 0xFFFFFFFF:  # words of another length
        return [seed_for(seed, purpose, round=round, client=int(c) - 1) for c in ids]
    run = _seedseq.words(seed)
    run += [0] * max(0, 4 - len(run))  # NumPy pads the run entropy to its pool when a spawn key follows
    high, low = _seedseq.generate_state([*run, int(purpose), round + 1, ids.astype(np.uint32)], len(ids), 2)
    combined: list[int] = ((high.astype(np.uint64) << np.uint64(31)) ^ low.astype(np.uint64)).tolist()
    return combined


_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _splitmix64(x: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint64]:
    # SplitMix64's finaliser (Steele, Lea, Flood 2014); uint64 arithmetic wraps mod 2**64.
    z = x + _GOLDEN
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def counter_uniforms(
    seed: int, purpose: Purpose, clients: npt.ArrayLike, counters: npt.ArrayLike
) -> npt.NDArray[np.float64]:
    """Uniform numbers in [0, 1), one per (client, counter) pair, without a generator each.

    A counter-based stream: the value for (seed, purpose, client, counter) depends on
    nothing else, so a client can recompute the numbers for its own rows alone (a deployed
    client reproduces its simulated local split), while a million clients cost one
    vectorised pass instead of a million generators.

    Example:
        >>> import numpy as np
        >>> a = counter_uniforms(0, Purpose.LOCAL_SPLIT, np.array([3, 3, 9]), np.array([0, 1, 0]))
        >>> b = counter_uniforms(0, Purpose.LOCAL_SPLIT, np.array([3]), np.array([1]))
        >>> bool(a[1] == b[0]), bool(((a >= 0) & (a < 1)).all())
        (True, True)
    """
    key = np.uint64(seed_for(seed, purpose))
    client_keys = _splitmix64(np.asarray(clients).astype(np.uint64) * _GOLDEN ^ key)
    mixed = _splitmix64(client_keys ^ _splitmix64(np.asarray(counters).astype(np.uint64)))
    return (mixed >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))
