from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from sheaf.core.rng import Purpose, seed_for, seeds_for, stream

seeds = st.integers(0, 2**32)
rounds = st.integers(0, 10_000)
clients = st.integers(0, 1_000_000)


@given(seeds, rounds, clients)
def test_a_stream_is_the_same_every_time_it_is_derived(seed: int, round: int, client: int) -> None:
    a = stream(seed, Purpose.FIT, round=round, client=client).random(4)
    b = stream(seed, Purpose.FIT, round=round, client=client).random(4)
    assert (a == b).all()


@given(seeds, rounds, clients)
def test_streams_differ_by_client_round_purpose_and_seed(seed: int, round: int, client: int) -> None:
    base = stream(seed, Purpose.FIT, round=round, client=client).random(4).tolist()
    others = [
        stream(seed, Purpose.FIT, round=round, client=client + 1),
        stream(seed, Purpose.FIT, round=round + 1, client=client),
        stream(seed, Purpose.SAMPLE, round=round, client=client),
        stream(seed + 1, Purpose.FIT, round=round, client=client),
    ]
    for other in others:
        assert other.random(4).tolist() != base


def test_round_zero_and_no_round_are_different_streams() -> None:
    assert stream(1, Purpose.FIT, round=0).random() != stream(1, Purpose.FIT).random()
    assert stream(1, Purpose.FIT, client=0).random() != stream(1, Purpose.FIT).random()


@given(seeds, rounds, clients)
def test_seed_for_gives_a_63_bit_seed(seed: int, round: int, client: int) -> None:
    value = seed_for(seed, Purpose.FIT, round=round, client=client)
    assert 0 <= value < 2**63
    assert value == seed_for(seed, Purpose.FIT, round=round, client=client)


@given(
    seed=st.one_of(st.integers(0, 2**32), st.integers(0, 2**200)),
    round=st.integers(0, 10**7),
    clients=st.lists(st.integers(0, 2**33), max_size=8),
    purpose=st.sampled_from(list(Purpose)),
)
def test_seeds_for_a_cohort_equal_one_seed_for_each_client(
    seed: int, round: int, clients: list[int], purpose: Purpose
) -> None:
    assert seeds_for(seed, purpose, round=round, clients=clients) == [
        seed_for(seed, purpose, round=round, client=c) for c in clients
    ]
