"""The contact book: who was heard when, who is connected, who went silent (once), who is back."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from sheaf.deploy.contacts import Contacts


def test_a_client_connects_once_goes_silent_once_and_comes_back() -> None:
    book = Contacts(heartbeat_timeout=5.0, started=100.0)

    assert book.heard(3, now=100.5) == "client_connected"
    assert book.heard(3, now=101.0) is None
    assert book.newly_silent(now=106.0) == []  # 5 s exactly: not yet past the timeout
    assert book.newly_silent(now=106.5) == [(3, 5.5)]
    assert book.newly_silent(now=120.0) == []  # reported once
    assert book.heard(3, now=121.0) == "client_back"
    assert book.newly_silent(now=126.5) == [(3, 5.5)]  # silent again after coming back


def test_silence_counts_from_the_servers_start_for_a_client_never_heard_from() -> None:
    book = Contacts(heartbeat_timeout=5.0, started=100.0)
    book.heard(1, now=103.0)

    assert book.silent_for(1, now=110.0) == 7.0
    assert book.silent_for(2, now=110.0) == 10.0  # never heard: since the start
    assert book.newly_silent(now=200.0) == [(1, 97.0)]  # only clients heard from are reported lost


def test_connected_clients_and_the_seconds_since_contact_by_id() -> None:
    book = Contacts(heartbeat_timeout=5.0, started=0.0)
    for client, at in [(7, 1.0), (2, 4.0), (5, 5.96)]:
        book.heard(client, now=at)

    assert book.connected(now=6.0) == [2, 5, 7]  # client 7 at exactly 5 s still counts
    assert book.connected(now=9.5) == [5]
    assert book.seconds_since_contact(now=10.0) == {"2": 6.0, "5": 4.0, "7": 9.0}


heard = st.lists(st.tuples(st.integers(0, 5), st.floats(0, 100)), max_size=20)


@given(heard, st.floats(0, 200), st.floats(0.1, 50))
def test_connected_and_newly_silent_split_the_clients_heard_from(
    requests: list[tuple[int, float]], now: float, timeout: float
) -> None:
    book = Contacts(heartbeat_timeout=timeout, started=0.0)
    for client, at in sorted(requests, key=lambda r: r[1]):
        book.heard(client, now=at)

    connected, silent = book.connected(now=now), [c for c, _ in book.newly_silent(now=now)]

    assert sorted(connected + silent) == sorted({c for c, _ in requests})  # each in exactly one
    assert all(book.silent_for(c, now=now) <= timeout for c in connected)
    assert all(book.silent_for(c, now=now) > timeout for c in silent)
