"""Shamir sharing: any t of n shares give the secret; t - 1 shares are consistent with every secret."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sheaf.core.errors import SecAggError
from sheaf.secagg.shamir import PRIME, combine, combine_all, secret_from_bytes, secret_to_bytes, split


@st.composite
def sharings(draw: st.DrawFn) -> tuple[int, int, list[int]]:
    n = draw(st.integers(1, 12))
    t = draw(st.integers(1, n))
    holders = draw(st.lists(st.integers(1, 10**6), min_size=n, max_size=n, unique=True))
    return draw(st.integers(0, PRIME - 1)), t, holders


@settings(max_examples=150, deadline=None)
@given(sharings(), st.randoms(use_true_random=False))
def test_any_t_of_the_shares_rebuild_the_secret(sharing: tuple[int, int, list[int]], random: object) -> None:
    secret, t, holders = sharing
    shares = split(secret, t, holders)
    chosen = random.sample(holders, t)  # type: ignore[attr-defined]
    assert combine({x: shares[x] for x in chosen}, t) == secret


def test_fewer_than_t_shares_are_consistent_with_every_secret_each_exactly_once() -> None:
    # In a small field every polynomial can be enumerated: for each possible secret, count
    # the polynomials of degree t - 1 through it and the t - 1 shares seen. Always exactly
    # one, so the shares say nothing about which secret it was.
    prime, t = 11, 3
    for seen in [{1: 4, 2: 7}, {3: 0, 9: 10}, {5: 5, 6: 1}]:
        counts = dict.fromkeys(range(prime), 0)
        for secret, a1, a2 in itertools.product(range(prime), repeat=3):
            if all((secret + a1 * x + a2 * x * x) % prime == y for x, y in seen.items()):
                counts[secret] += 1
        assert set(counts.values()) == {1}
    # ... and t - 1 real shares of a secret are equally consistent with any other secret.
    shares = split(7, t, [1, 2, 3, 4], prime=prime)
    seen = {1: shares[1], 2: shares[2]}
    for other in range(prime):
        # the unique polynomial through (0, other) and the seen shares exists in the field
        rebuilt = combine({**seen, 5: _value_at(5, {0: other, **seen}, prime)}, t, prime=prime)
        assert rebuilt == other


def _value_at(x: int, points: dict[int, int], prime: int) -> int:
    total = 0
    for xi, yi in points.items():
        term = yi
        for xj in points:
            if xj != xi:
                term = term * (x - xj) * pow(xi - xj, -1, prime) % prime
        total = (total + term) % prime
    return total


@settings(max_examples=50, deadline=None)
@given(sharings())
def test_fewer_than_t_shares_cannot_rebuild(sharing: tuple[int, int, list[int]]) -> None:
    secret, t, holders = sharing
    shares = split(secret, t, holders)
    with pytest.raises(SecAggError, match="cannot rebuild"):
        combine({x: shares[x] for x in holders[: t - 1]}, t)


def test_shares_round_trip_as_bytes_and_bad_ones_are_refused() -> None:
    assert secret_from_bytes(secret_to_bytes(PRIME - 1)) == PRIME - 1
    with pytest.raises(SecAggError):
        secret_from_bytes(b"\xff" * 66)
    with pytest.raises(SecAggError):
        secret_from_bytes(b"\x00" * 65)
    with pytest.raises(SecAggError):
        split(1, 3, [1, 1, 2])


@settings(max_examples=60, deadline=None)
@given(data=st.data(), threshold=st.integers(1, 6), holders=st.integers(2, 12), owners=st.integers(1, 8))
def test_combine_all_gives_each_secret_as_combine_does(
    data: st.DataObject, threshold: int, holders: int, owners: int
) -> None:
    # A server's view: each owner's shares held by some of the clients, often everyone but
    # the owner itself (the complete graph) — the case whose coefficients come from one
    # larger set — and sometimes a random subset (a sparse graph, missing replies).
    prime = 2**61 - 1  # small field: quick, and the algebra is the same
    secrets, expected = {}, {}
    for owner in range(owners):
        complete = data.draw(st.booleans())
        pool = [x for x in range(1, holders + 2) if x != owner + 1]
        if complete:
            xs = pool
        else:
            xs = data.draw(st.lists(st.sampled_from(pool), min_size=min(threshold, len(pool)), unique=True))
        if len(xs) < threshold:
            continue
        value = data.draw(st.integers(0, prime - 1))
        shares = split(value, threshold, xs, prime=prime)
        secrets[owner] = shares
        expected[owner] = combine(shares, threshold, prime=prime)
        assert expected[owner] == value
    assert combine_all(secrets, threshold, prime=prime) == expected


def test_combine_all_refuses_what_combine_refuses() -> None:
    shares = split(99, 3, [1, 2, 3, 4])
    with pytest.raises(SecAggError, match="cannot rebuild"):
        combine_all({"a": shares, "b": {1: shares[1], 2: shares[2]}}, 3)
    with pytest.raises(SecAggError, match="not a field element"):
        combine_all({"a": {**shares, 1: PRIME}}, 3)
