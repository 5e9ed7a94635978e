"""The coordinator settles each client's share of a batch exactly once, by the first cause."""

from __future__ import annotations

import threading

import numpy as np

from sheaf.core.config import ServerConfig
from sheaf.core.params import Params
from sheaf.deploy.coordinator import Coordinator
from sheaf.deploy.wire import ReceivedResult
from sheaf.deploy.work import Slot, Work


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def make(clients: int = 3, **settings: float) -> tuple[Coordinator, Clock, Work]:
    clock = Clock()
    config = ServerConfig(**{"round_timeout": 60.0, "heartbeat_interval": 1.0, "heartbeat_timeout": 5.0, **settings})
    coordinator = Coordinator({i: f"c{i}" for i in range(clients)}, config, clock=clock)
    work = Work("fit", 4, {i: Slot(i, f"r4-fit-c{i}", b"h%d" % i) for i in range(clients)}, [b"chunk"])
    coordinator.post(work)
    return coordinator, clock, work


def result(update_id: str = "u") -> ReceivedResult:
    return ReceivedResult("t", update_id, "fit", 4, 10, {}, 0.0, Params({"w": np.zeros(1)}))


def test_a_share_is_settled_once_and_a_repeat_delivery_is_a_duplicate() -> None:
    coordinator, _, work = make()
    assert coordinator.settle(0, "r4-fit-c0", "u1", result=result("u1")) == ("accepted", "")
    assert coordinator.settle(0, "r4-fit-c0", "u1", result=result("u1"))[0] == "duplicate"
    assert coordinator.settle(0, "r4-fit-c0", "u2", result=result("u2"))[0] == "stale"
    assert coordinator.settle(1, "r3-fit-c1", "u3", result=result("u3"))[0] == "stale"
    assert coordinator.settle(1, "r4-fit-c1", "u4", failure="update rejected: NaN", rejected=True)[0] == "rejected"
    assert work.slots[0].state == "done" and work.slots[1].failure == "update rejected: NaN"


def test_a_duplicate_stays_a_duplicate_after_its_round() -> None:
    coordinator, _, _ = make(clients=1)
    coordinator.settle(0, "r4-fit-c0", "u1", result=result("u1"))
    coordinator.post(Work("fit", 5, {0: Slot(0, "r5-fit-c0", b"")}, []))
    assert coordinator.settle(0, "r4-fit-c0", "u1")[0] == "duplicate"
    assert coordinator.settle(0, "r4-fit-c0", "u9")[0] == "stale"


def test_pulling_hands_out_the_task_until_it_is_settled() -> None:
    coordinator, _, _ = make()
    assert coordinator.task_for(0) == (b"h0", [b"chunk"])
    assert coordinator.task_for(0) == (b"h0", [b"chunk"])  # a client that lost the stream pulls again
    assert coordinator.task_for(9) is None
    coordinator.settle(0, "r4-fit-c0", "u", result=result())
    assert coordinator.task_for(0) is None


def test_silent_clients_drop_out_after_the_heartbeat_timeout_and_the_rest_at_the_deadline() -> None:
    coordinator, clock, work = make()
    coordinator.touch(0)
    coordinator.touch(1)
    coordinator.settle(0, "r4-fit-c0", "u", result=result())
    clock.now += 4.0
    coordinator.touch(1)
    clock.now += 2.0  # client 2 never came: silent since the server started, 6 s > 5 s

    outcome_holder = {}
    waiter = threading.Thread(target=lambda: outcome_holder.update(o=coordinator.wait(work)))
    waiter.start()
    waiter.join(0.5)
    assert waiter.is_alive()  # client 1 is alive and still training
    assert work.slots[2].failure.startswith("no contact for 6 s (server.heartbeat_timeout=5 s)")
    clock.now += 4.5  # 4.5 s since client 1's last request: still alive, but the round is over
    clock.now = work.posted + 60.0
    coordinator.touch(1)
    waiter.join(5)
    outcome = outcome_holder["o"]
    assert list(outcome.results) == [0]
    assert [(f.client_id, f.reason) for f in outcome.failures] == [
        (1, "no result within server.round_timeout=60 s"),
        (2, "no contact for 6 s (server.heartbeat_timeout=5 s)"),
    ]


def test_connected_clients_and_the_live_snapshot() -> None:
    coordinator, clock, _ = make()
    coordinator.touch(0)
    clock.now += 3
    coordinator.touch(1)
    clock.now += 3
    assert coordinator.connected() == [1]
    snapshot = coordinator.snapshot()
    assert snapshot["seconds_since_contact"] == {"0": 6.0, "1": 3.0}
    assert snapshot["work"] == {"kind": "fit", "round": 4, "waiting_for": [0, 1, 2]}


def test_finishing_ends_work_and_wakes_waiting_pulls() -> None:
    coordinator, _, _ = make()
    woken = []
    coordinator.wakeup = lambda: woken.append(True)
    coordinator.finish()
    assert coordinator.finished and coordinator.task_for(0) is None and woken == [True]


def test_each_result_is_handed_to_on_result_once_as_it_arrives_and_its_return_is_kept() -> None:
    coordinator, _, work = make(clients=3)
    seen: list[int] = []

    def strip(client_id: int, got: ReceivedResult) -> ReceivedResult:
        seen.append(client_id)
        return ReceivedResult(got.task_id, got.update_id, "fit", 4, got.num_examples)  # no tensors

    outcome_holder = {}
    waiter = threading.Thread(target=lambda: outcome_holder.update(o=coordinator.wait(work, strip)))
    waiter.start()
    coordinator.settle(2, "r4-fit-c2", "u2", result=result("u2"))
    for _ in range(100):  # the waiter takes client 2's result while the others still train
        if seen:
            break
        waiter.join(0.05)
    assert seen == [2] and waiter.is_alive()
    coordinator.settle(0, "r4-fit-c0", "u0", result=result("u0"))
    coordinator.settle(1, "r4-fit-c1", "u1", failure="fit failed: boom")
    waiter.join(5)
    outcome = outcome_holder["o"]
    assert sorted(seen) == [0, 2] and len(seen) == 2
    assert list(outcome.results) == [0, 2] and all(r.delta is None for r in outcome.results.values())
    assert [(f.client_id, f.reason) for f in outcome.failures] == [(1, "fit failed: boom")]
