"""Shamir secret sharing over a prime field: any t of n shares give the secret, t - 1 nothing.

To share a secret ``s`` with threshold ``t``, draw a polynomial ``f`` of degree ``t - 1``
over GF(p) with ``f(0) = s`` and the other coefficients uniform, and give holder ``x`` the
share ``f(x)`` (``x`` from 1 to p - 1, distinct). Any ``t`` shares determine ``f`` (Lagrange
interpolation at 0); any ``t - 1`` shares are consistent with *every* secret, each through
exactly one polynomial, so they say nothing about it (the property tests check both).

The field is GF(2**521 - 1), a Mersenne prime larger than any 256-bit secret (a
self-mask seed or an X25519 private key), so one share holds a whole secret: 66 bytes.
The coefficients come from :mod:`secrets` (the OS's generator).

Example:
    >>> shares = split(1234, threshold=3, holders=[1, 2, 3, 4, 5])
    >>> combine({x: shares[x] for x in (2, 4, 5)}, threshold=3)
    1234

References:
    Shamir. How to Share a Secret. Commun. ACM 1979.
"""

from __future__ import annotations

import functools
import math
import secrets
from collections import Counter
from collections.abc import Callable, Hashable, Iterable, Mapping
from typing import TypeVar

from sheaf.core.errors import SecAggError

__all__ = [
    "PRIME",
    "SHARE_BYTES",
    "combine",
    "combine_all",
    "lagrange_at_zero",
    "secret_from_bytes",
    "secret_to_bytes",
    "split",
]

Owner = TypeVar("Owner", bound=Hashable)

#: The field's prime, 2**521 - 1.
PRIME = (1 << 521) - 1
#: Bytes of one share (an element of the field), big-endian.
SHARE_BYTES = 66


def split(
    secret: int,
    threshold: int,
    holders: Iterable[int],
    *,
    prime: int = PRIME,
    randbelow: Callable[[int], int] = secrets.randbelow,
) -> dict[int, int]:
    """Shares of ``secret`` for ``holders`` (their x-coordinates), ``threshold`` needed to rebuild it.

    Raises:
        SecAggError: if the secret is not a field element, the threshold is not in
            ``1..len(holders)``, or a holder is 0, repeated or not below ``prime``.
    """
    xs = list(holders)
    if not 0 <= secret < prime:
        raise SecAggError("a Shamir secret must be a field element")
    if not 1 <= threshold <= len(xs):
        raise SecAggError(f"a Shamir threshold must be in 1..{len(xs)} (the holders), got {threshold}")
    if len(set(xs)) != len(xs) or any(not 0 < x < prime for x in xs):
        raise SecAggError("Shamir holders must be distinct, non-zero field elements")
    coefficients = [secret] + [randbelow(prime) for _ in range(threshold - 1)]
    shares = {}
    highest_first = coefficients[::-1]
    for x in xs:
        value = 0
        for coefficient in highest_first:  # Horner, reduced once at the end: the same value mod p,
            value = value * x + coefficient  # and an integer of about t log2(x) bits more than p
        shares[x] = value % prime
    return shares


@functools.lru_cache(maxsize=256)
def lagrange_at_zero(holders: tuple[int, ...], prime: int = PRIME) -> tuple[int, ...]:
    """The Lagrange coefficients ``λ_i = Π_{j != i} x_j / (x_j - x_i)`` that give ``f(0) =
    Σ λ_i f(x_i)``; public, so computed once per set of holders (a server rebuilding many
    secrets from the same survivors reuses them).

    ``λ_i = (Π_j x_j) / (x_i Π_{j != i} (x_j - x_i))``: the denominators are exact products
    of small integers, reduced once, and inverted together with one modular inversion
    (Montgomery's trick).

    Example:
        >>> weights = lagrange_at_zero((1, 2, 3), prime=11)
        >>> sum(w * (5 + 2 * x + 7 * x * x) for w, x in zip(weights, (1, 2, 3))) % 11
        5
    """
    numerator = 1
    for x in holders:
        numerator = numerator * x % prime
    # Exact products of small integers (math.prod runs in C), reduced once each.
    denominators = [xi * math.prod([xj - xi for xj in holders if xj != xi]) % prime for xi in holders]
    # Montgomery's trick: one inversion for all denominators.
    running = [1]
    for value in denominators:
        running.append(running[-1] * value % prime)
    inverse = pow(running[-1], -1, prime)
    inverses = [0] * len(denominators)
    for i in range(len(denominators) - 1, -1, -1):
        inverses[i] = inverse * running[i] % prime
        inverse = inverse * denominators[i] % prime
    return tuple(numerator * value % prime for value in inverses)


@functools.lru_cache(maxsize=256)
def _without(holders: tuple[int, ...], removed: int, prime: int) -> tuple[int, ...]:
    """The Lagrange coefficients at zero of ``holders`` less ``removed``, from those of
    ``holders``: ``λ'_i = λ_i (x_r - x_i) / x_r``, since ``λ_i = λ'_i x_r / (x_r - x_i)``;
    kept, like :func:`lagrange_at_zero`'s."""
    weights = lagrange_at_zero(holders, prime)
    inverse = pow(removed, -1, prime)
    return tuple(w * (removed - x) % prime * inverse % prime for x, w in zip(holders, weights) if x != removed)


def combine(shares: Mapping[int, int], threshold: int, *, prime: int = PRIME) -> int:
    """The secret from at least ``threshold`` shares (the first ``threshold`` by holder).

    Raises:
        SecAggError: if fewer than ``threshold`` shares are given, or a holder or share is
            not a field element.
    """
    if len(shares) < threshold or threshold < 1:
        raise SecAggError(f"{len(shares)} shares cannot rebuild a secret shared with threshold {threshold}")
    points = sorted(shares.items())[:threshold]
    if any(not 0 < x < prime or not 0 <= y < prime for x, y in points):
        raise SecAggError("a Shamir share is not a field element")
    weights = lagrange_at_zero(tuple(x for x, _ in points), prime)
    return sum(y * w for (_, y), w in zip(points, weights)) % prime


def secret_to_bytes(value: int) -> bytes:
    """A field element as :data:`SHARE_BYTES` big-endian bytes."""
    return value.to_bytes(SHARE_BYTES, "big")


def secret_from_bytes(data: bytes) -> int:
    """The inverse of :func:`secret_to_bytes`.

    Raises:
        SecAggError: if ``data`` is not :data:`SHARE_BYTES` long or not a field element.
    """
    if len(data) != SHARE_BYTES:
        raise SecAggError(f"a share must be {SHARE_BYTES} bytes, got {len(data)}")
    value = int.from_bytes(data, "big")
    if value >= PRIME:
        raise SecAggError("a share is not a field element")
    return value


def combine_all(secrets: Mapping[Owner, Mapping[int, int]], threshold: int, *, prime: int = PRIME) -> dict[Owner, int]:
    """Every secret of ``secrets`` (owner -> its shares), each from the first ``threshold`` of
    its shares by holder — what :func:`combine` gives for each, bit for bit.

    The coefficients depend only on the holders, so secrets rebuilt from the same holders
    share one coefficient vector; and where several holder sets are one larger set less one
    holder each (a server rebuilding the secrets of clients that are themselves among the
    first holders: each is left out of its own set), their coefficients come from the larger
    set's in ``threshold`` multiplications each instead of ``threshold**2``.

    Raises:
        SecAggError: as :func:`combine`, for the first secret with too few shares or a
            share that is not a field element.

    Example:
        >>> shares = {name: split(value, 2, [1, 2, 3]) for name, value in {"a": 5, "b": 7}.items()}
        >>> combine_all(shares, 2)
        {'a': 5, 'b': 7}
    """
    if threshold < 1:
        raise SecAggError(f"a Shamir threshold must be at least 1, got {threshold}")
    points: dict[Owner, tuple[tuple[int, ...], list[int]]] = {}
    for owner, shares in secrets.items():
        if len(shares) < threshold:
            raise SecAggError(f"{len(shares)} shares cannot rebuild a secret shared with threshold {threshold}")
        chosen = sorted(shares.items())[:threshold]
        if any(not 0 < x < prime or not 0 <= y < prime for x, y in chosen):
            raise SecAggError("a Shamir share is not a field element")
        points[owner] = (tuple(x for x, _ in chosen), [y for _, y in chosen])
    sets = {holders for holders, _ in points.values()}
    everyone = sorted({x for holders in sets for x in holders})
    # Each holder set's candidate superset: it and the first holder it lacks.
    supersets: dict[tuple[int, ...], tuple[tuple[int, ...], int]] = {}
    for holders in sets:
        present = set(holders)
        extra = next((x for x in everyone if x not in present), None)
        if extra is not None:
            supersets[holders] = (tuple(sorted((*holders, extra))), extra)
    uses = Counter(superset for superset, _ in supersets.values())
    weights: dict[tuple[int, ...], tuple[int, ...]] = {}
    for holders in sets:
        superset, extra = supersets.get(holders, ((), 1))
        if uses[superset] > 1:
            weights[holders] = _without(superset, extra, prime)
        else:
            weights[holders] = lagrange_at_zero(holders, prime)
    return {
        owner: sum(y * w for y, w in zip(values, weights[holders])) % prime
        for owner, (holders, values) in points.items()
    }
