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

from enum import IntEnum

import numpy as np

__all__ = ["Purpose", "seed_for", "stream"]

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
