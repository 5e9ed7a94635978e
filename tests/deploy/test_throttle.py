"""Refusal logs: bounded lines per peer and window, a count of what was left out, bounded memory."""

from __future__ import annotations

import logging

import pytest

from sheaf.deploy.throttle import RefusalLog


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _lines(caplog: pytest.LogCaptureFixture) -> list[tuple[str, dict[str, object]]]:
    return [(r.getMessage(), dict(getattr(r, "sheaf_fields", {}))) for r in caplog.records]


def test_each_peer_gets_a_burst_per_window_and_then_one_count_of_the_rest(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="sheaf")
    clock = Clock()
    refusals = RefusalLog(logging.getLogger("sheaf.test"), burst=3, window=10.0, clock=clock)
    for port in range(1000):  # new connections from one host share its count
        refusals.log(f"ipv4:10.0.0.1:{port}", "request_refused", reason="unknown client key")
    refusals.log("ipv4:10.0.0.2:1", "request_refused", reason="unknown client key")
    clock.now = 10.0
    refusals.log("ipv4:10.0.0.1:5", "request_refused", reason="replayed request")

    lines = _lines(caplog)
    assert [name for name, _ in lines] == ["request_refused"] * 4 + ["refusals_suppressed", "request_refused"]
    assert lines[4][1] == {"peer": "ipv4:10.0.0.1", "suppressed": 997, "seconds": 10.0}


def test_it_remembers_a_bounded_number_of_peers() -> None:
    refusals = RefusalLog(logging.getLogger("sheaf.test"), peers=50)
    for host in range(10_000):
        refusals.log(f"ipv4:10.{host // 256}.{host % 256}.1:7", "request_refused", reason="x")
    assert len(refusals._windows) == 50
