"""Waiting for a quorum: enough clients of the pool, reported while awaited, given up at the limit."""

from __future__ import annotations

import logging
import math
import threading
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sheaf.core.config import ServerConfig
from sheaf.deploy.coordinator import Coordinator
from sheaf.deploy.quorum import wait_for_quorum


class Unchanging(threading.Condition):
    """A condition nobody notifies: a look never waits, so the tests run on the made-up clock."""

    def wait(self, timeout: float | None = None) -> bool:
        return False


class Looks:
    """Who is connected at each look (the last set stays); the clock reads the look's index."""

    def __init__(self, schedule: list[set[int]]) -> None:
        self.schedule, self.count, self.ticks = schedule, 0, 0

    def connected(self) -> set[int]:
        self.count += 1
        return self.schedule[min(self.count - 1, len(self.schedule) - 1)]

    def clock(self) -> float:
        return float(max(self.count - 1, 0))

    def tick(self) -> None:
        self.ticks += 1

    def wait(self, pool: list[int], count: int, **options: Any) -> bool:
        return wait_for_quorum(
            pool, count, connected=self.connected, clock=self.clock, changed=Unchanging(), tick=self.tick, **options
        )


def events(caplog: pytest.LogCaptureFixture, name: str) -> list[dict[str, Any]]:
    return [r.sheaf_fields for r in caplog.records if r.name == "sheaf.server" and r.getMessage() == name]


def test_enough_clients_already_connected_return_at_once_without_a_log_line(caplog: pytest.LogCaptureFixture) -> None:
    looks = Looks([{1, 2, 3}])
    with caplog.at_level(logging.INFO, logger="sheaf.server"):
        assert looks.wait([1, 2, 3], 3, limit=0.0)

    assert (looks.count, looks.ticks) == (1, 0)
    assert caplog.records == []


def test_only_clients_of_the_pool_count(caplog: pytest.LogCaptureFixture) -> None:
    looks = Looks([{7, 8, 9}, {1, 7, 8, 9}, {1, 2}])
    with caplog.at_level(logging.INFO, logger="sheaf.server"):
        assert looks.wait([1, 2, 3], 2, round=4, report_every=1.0)

    assert looks.count == 3
    assert [(e["round"], e["connected"], e["not_connected"]) for e in events(caplog, "waiting_for_clients")] == [
        (4, 0, [1, 2, 3]),
        (4, 1, [2, 3]),
    ]


def test_awaited_clients_are_reported_every_report_every_seconds_the_first_twenty(
    caplog: pytest.LogCaptureFixture,
) -> None:
    looks = Looks([set()] * 7 + [set(range(30))])
    with caplog.at_level(logging.INFO, logger="sheaf.server"):
        assert looks.wait(list(range(30)), 30, report_every=3.0)

    reported = events(caplog, "waiting_for_clients")
    assert len(reported) == 3  # at 0, 3 and 6 s of the clock
    assert all(e["not_connected"] == list(range(20)) and "round" not in e for e in reported)
    assert looks.ticks == 7  # once per look that found too few


def test_at_the_limit_it_gives_up_and_says_how_long_it_waited(caplog: pytest.LogCaptureFixture) -> None:
    clock = iter([10.0, 10.0, 12.34, 15.06]).__next__
    with caplog.at_level(logging.INFO, logger="sheaf.server"):
        back = wait_for_quorum([1, 2], 2, connected=lambda: [2], clock=clock, changed=Unchanging(), limit=5.0, round=9)

    assert not back
    assert events(caplog, "clients_not_back") == [{"round": 9, "connected": 1, "needed": 2, "waited_seconds": 5.1}]


schedules = st.lists(st.sets(st.integers(0, 5), max_size=6), min_size=1, max_size=8)


@given(schedules, st.lists(st.integers(0, 5), min_size=1, max_size=6, unique=True), st.integers(0, 6), st.floats(0, 9))
def test_it_returns_true_exactly_when_enough_are_connected_before_the_limit(
    schedule: list[set[int]], pool: list[int], count: int, limit: float
) -> None:
    looks = Looks(schedule)
    enough = [i for i, now in enumerate(schedule) if len(now & set(pool)) >= count]
    first = enough[0] if enough else math.inf  # the look at which there are enough (the last set stays)

    back = looks.wait(pool, count, limit=limit)

    assert back == (first <= math.ceil(limit))  # each look before it is at a second < limit
    assert looks.count == (first + 1 if back else math.ceil(limit) + 1)


def test_the_coordinator_waits_among_its_authorised_clients_on_its_own_clock() -> None:
    now = [0.0]
    coordinator = Coordinator(
        {0: "a", 1: "b", 2: "c"}, ServerConfig(heartbeat_interval=1.0, heartbeat_timeout=5.0), clock=lambda: now[0]
    )
    for client in (0, 5):  # 5 is not authorised: it does not count
        coordinator.touch(client)

    assert coordinator.wait_for_clients(1)
    assert coordinator.wait_for_clients(1, among=[0], limit=0.0)

    later = threading.Timer(0.3, coordinator.touch, args=(2,))  # heard from while the server waits
    later.start()
    assert coordinator.wait_for_clients(2)  # looks again every 0.2 s: returns once client 2 is heard from
    later.join()
    now[0] = 10.0  # both silent past the heartbeat timeout now
    assert not coordinator.wait_for_clients(1, among=[0, 2], limit=0.0)
