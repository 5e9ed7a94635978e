"""FedBuff deployed, in one process: the real server, coordinator, auth, wire and clients over
the in-process transport. Buffer semantics, staleness from the server's own ledger, lying and
late clients, max_staleness, the task timeout, a killed server's resume, and the step that is
the simulation's own function, bit for bit."""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from sheaf.cli.app import app
from sheaf.core.config import RunConfig
from sheaf.deploy.async_ledger import AsyncLedger
from sheaf.deploy.backend import DeploymentBackend, task_id
from sheaf.deploy.buffered import BufferedServer
from sheaf.deploy.coordinator import Coordinator
from sheaf.deploy.inprocess import InProcessTransport
from sheaf.deploy.keys import KeySet
from sheaf.deploy.local import deployment_task
from sheaf.deploy.status import run_status
from sheaf.deploy.wire import ReceivedResult
from sheaf.evaluation.history import RoundRecord
from sheaf.run.assemble import assemble, open_or_create_store
from sheaf.run.buffered import buffer_step
from sheaf.run.loop import Federated
from sheaf.run.population import Population
from sheaf.run.report import report_run
from sheaf.run.store import RunStore
from sheaf.strategies.base import RoundContext
from sheaf.strategies.registry import build_strategy
from tests.deploy.conftest import (
    Calls,
    ClientRun,
    ManualClock,
    ServerThread,
    client_files,
    deploy_config,
    events,
    key_ids,
    let_time_pass,
    start_client,
    start_server,
    wait_for,
)
from tests.deploy.rogue import rogue, roomy_in_process, vanish_with_a_task
from tests.deploy.tasks import GATE

GATED = "tests.deploy.tasks:gated_softmax"

ASYNC = ["asynchronous.enabled=true", "concurrency=3", "buffer=2", "min_clients=2", "rounds=4"]


def fedbuff_config(tmp_path: Path, *extra: str) -> RunConfig:
    return deploy_config(tmp_path, *ASYNC, *extra)


@dataclass
class FedBuffDeployment:
    """A FedBuff server serving over the in-process transport, and what its clients need."""

    config: RunConfig
    server: ServerThread
    transport: InProcessTransport
    keys: KeySet
    files: list[Path]
    state: Path

    def clients(self, *ids: int, task: str | None = None) -> list[ClientRun]:
        """Start the clients ``ids`` with the tests' task (or ``task``)."""
        options = {} if task is None else {"task": task}
        key, files = self.keys.client_keys, self.files
        return [start_client(self.transport, key[i], files[i], self.state, **options) for i in ids]


@pytest.fixture
def fedbuff(tmp_path: Path, keys: KeySet, transport: InProcessTransport) -> Callable[..., FedBuffDeployment]:
    """``fedbuff(*overrides, **server_options)``: a FedBuff server (:data:`ASYNC` and the
    overrides) started over the test's transport, its four clients' data files written."""

    def serve(*extra: str, **server: Any) -> FedBuffDeployment:
        config = fedbuff_config(tmp_path, *extra)
        files = client_files(config, tmp_path / "data")
        started = start_server(config, keys, transport=transport, **server)
        return FedBuffDeployment(config, started, transport, keys, files, tmp_path / "state")

    return serve


@pytest.fixture
def gate() -> Iterator[None]:
    """:data:`GATE` closed for the test (gated clients wait in fit) and open after it."""
    GATE.clear()
    yield
    GATE.set()


def test_a_deployed_fedbuff_run_steps_every_k_results_with_the_simulations_step(
    fedbuff: Callable[..., FedBuffDeployment],
) -> None:
    run = fedbuff("name=fedbuff")
    config, clients = run.config, run.clients(0, 1, 2, 3)

    result = run.server.result()

    assert [client.status() for client in clients] == [0, 0, 0, 0]
    history = list(result.history)
    assert [(r.round, r.completed, r.aggregated) for r in history] == [(n, 2, True) for n in (1, 2, 3, 4)]
    with RunStore.open(result.run_path, readonly=True) as store:
        records = store.client_records(phase="fit")
        before = store.params(3)
    assert all("staleness" in rec.metrics for _, rec in records)
    # The last step again, through the simulation's step function, from what the server buffered.
    ledger = AsyncLedger(result.run_path)
    buffered = ledger.buffered(4)
    ledger.close()
    # One record per buffered update (a client may have two: older first), as buffer_step orders them.
    assert [(u.client_id, float(s)) for u, s in sorted(buffered, key=lambda b: (b[0].client_id, -b[1]))] == [
        (rec.client_id, rec.metrics["staleness"]) for r, rec in records if r == 4
    ]
    strategy = build_strategy(config.strategy)
    template = strategy.init(before)
    with RunStore.open(result.run_path, readonly=True) as store:
        state = store.state(3, template=template)
    step = buffer_step(strategy, buffered, before, state, RoundContext(4, before, config.seed, 4), config)
    assert step.params.array_equal(result.params)


def test_status_and_report_say_fedbuff_with_steps_staleness_and_seconds_per_step(
    tmp_path: Path, fedbuff: Callable[..., FedBuffDeployment]
) -> None:
    run = fedbuff("name=shown")
    clients = run.clients(0, 1, 2, 3)
    result = run.server.result()
    assert [client.status() for client in clients] == [0, 0, 0, 0]

    status = run_status(result.run_path)
    shown = CliRunner().invoke(app, ["status", str(result.run_path)], terminal_width=200)
    report = report_run(result.run_path, tmp_path / "report")

    fedbuff = status["asynchronous"]
    staleness = [r.fit["staleness_max"] for r in result.history]
    assert fedbuff["aggregation"] == "FedBuff" and fedbuff["server_steps"] == 4
    assert fedbuff["staleness_max"] == max(staleness) and fedbuff["seconds_per_step"] > 0
    assert "FedBuff (C=3, K=2): 4 server steps" in shown.stdout
    page = next(p for p in report if p.name == "report.html").read_text()
    assert "FedBuff, asynchronous (C=3, K=2)" in page and "staleness max" in page


def _settled(logs: pytest.LogCaptureFixture, client: int) -> bool:
    return any(e.get("client") == client for name in ("update_buffered", "update_rejected") for e in events(logs, name))


class OpenGateAt:
    """Opens the slow client's gate when step ``at`` is committed, and holds the server there
    until that client's result is settled: its update is then several steps stale."""

    def __init__(self, at: int, settled: Callable[[], bool]) -> None:
        self.at, self.settled = at, settled

    def on_start(self, config: RunConfig, first_round: int, cohort: int, population: int) -> None:
        pass

    def on_round(self, record: RoundRecord) -> None:
        if record.round == self.at:
            GATE.set()
            wait_for(self.settled, 60, "the slow client's result to be settled")


@pytest.mark.parametrize("max_staleness", [100, 1])
def test_a_slow_clients_update_carries_the_staleness_of_the_servers_ledger_and_max_staleness_refuses_it(
    fedbuff: Callable[..., FedBuffDeployment], gate: None, logs: pytest.LogCaptureFixture, max_staleness: int
) -> None:
    run = fedbuff("rounds=6", f"max_staleness={max_staleness}", listener=OpenGateAt(2, lambda: _settled(logs, 3)))
    (slow,) = run.clients(3, task=GATED)
    clients = run.clients(0)
    wait_for(lambda: any(e["client"] == 3 and e["version"] == 0 for e in events(logs, "task_issued")),
             60, "the slow client's task from version 0")  # fmt: skip
    clients += run.clients(1, 2)
    result = run.server.result()

    assert [client.status() for client in [*clients, slow]] == [0, 0, 0, 0]
    with RunStore.open(result.run_path, readonly=True) as store:
        records = [(r, rec) for r, rec in store.client_records(phase="fit")]
        failures = [(r, c, reason) for r, c, phase, reason in store.failures() if phase == "fit"]
    # Its first task was from version 0 (the server's ledger), so at step r it is r - 1 steps stale.
    late = [
        (r, rec.metrics["staleness"]) for r, rec in records if rec.client_id == 3 and rec.metrics["staleness"] == r - 1
    ]
    buffered = [e for e in events(logs, "update_buffered") if e["client"] == 3]
    rejected = [e for e in events(logs, "update_rejected") if e["client"] == 3]
    if max_staleness == 100:
        assert late, (records, buffered, rejected, failures)
        (step, staleness), *_ = late
        assert staleness == step - 1 >= 2 and buffered[0]["staleness"] == staleness
        assert not any("max_staleness" in e["reason"] for e in rejected)
    else:
        assert not late and all(rec.metrics["staleness"] <= 1 for _, rec in records)
        assert any(c == 3 and "past asynchronous.max_staleness=1" in reason for _, c, reason in failures)
        assert "past asynchronous.max_staleness=1" in rejected[0]["reason"]  # its first result: version 0
    assert all(r.aggregated for r in result.history) and len(result.history) == 6


def test_lying_clients_are_refused_with_reasons_and_the_run_goes_on(
    fedbuff: Callable[..., FedBuffDeployment], keys: KeySet, transport: InProcessTransport
) -> None:
    run = fedbuff("rounds=12", "concurrency=4")
    server, honest = run.server, run.clients(0, 1, 2)

    lines = transport.run(rogue(roomy_in_process(transport), keys.client_keys[3], ["nan", "weight:10000000",
                                                                                    "norm:1e30", "honest"]))  # fmt: skip
    result = server.result()

    assert [client.status() for client in honest] == [0, 0, 0]
    by_mode = dict(line.split(" ", 1) for line in lines)
    assert by_mode["nan"].startswith("REJECTED") and "NaN" in by_mode["nan"]
    assert by_mode["weight:10000000"].startswith("REJECTED") and "examples" in by_mode["weight:10000000"]
    assert by_mode["norm:1e30"].startswith("REJECTED")
    assert by_mode["honest"].startswith("ACCEPTED")
    assert result.params.all_finite() and all(r.aggregated for r in result.history)
    with RunStore.open(result.run_path, readonly=True) as store:
        refused = [reason for _, c, phase, reason in store.failures() if c == 3 and phase == "fit"]
    assert len(refused) == 3 and all(reason.startswith("update rejected") for reason in refused)


def test_a_task_never_returned_frees_its_slot_after_the_task_timeout(
    fedbuff: Callable[..., FedBuffDeployment], gate: None, transport: InProcessTransport, logs: pytest.LogCaptureFixture
) -> None:
    clock, calls = ManualClock(), Calls(transport)
    run = fedbuff("concurrency=2", "task_timeout=5", "heartbeat_interval=0.05", clock=clock)
    (slow,) = run.clients(3, task=GATED)
    fast = run.clients(0)
    wait_for(lambda: {e["client"] for e in events(logs, "task_issued")} == {0, 3}, 60, "both to hold a task")

    def timed_out() -> bool:
        return any(e["client"] == 3 and "task_timeout" in e["reason"] for e in events(logs, "client_dropped"))

    let_time_pass(clock, calls, key_ids(run.keys, (0, 3)), timed_out, step=2)  # both keep calling
    fast += run.clients(1, 2)
    GATE.set()
    result = run.server.result()

    assert [client.status() for client in [*fast, slow]] == [0, 0, 0, 0]
    with RunStore.open(result.run_path, readonly=True) as store:
        reasons = [(r, reason) for r, c, phase, reason in store.failures() if c == 3 and phase == "fit"]
    assert reasons[0] == (1, "no result within asynchronous.task_timeout=5 s")
    assert len(result.history) == 4


def test_a_client_silent_past_the_heartbeat_timeout_loses_its_task_and_the_run_goes_on(
    fedbuff: Callable[..., FedBuffDeployment], transport: InProcessTransport, logs: pytest.LogCaptureFixture
) -> None:
    # Client 3 takes a task and vanishes, as a killed process. The server's clock is the
    # test's: it moves only once client 0 has called again, so no machine's speed decides
    # who looks silent. Clients 1 and 2 start after the drop: no step is taken before it.
    clock, calls = ManualClock(), Calls(transport)
    run = fedbuff("heartbeat_timeout=5", "heartbeat_interval=0.05", clock=clock)
    vanished = transport.submit(vanish_with_a_task(transport.connect, run.keys.client_keys[3]))
    fast = run.clients(0)  # min_clients=2: the run starts with clients 3 and 0
    task = vanished.result(60)

    def dropped() -> bool:  # for any reason: the assertions below say which
        return any(e["client"] == 3 for e in events(logs, "client_dropped"))

    let_time_pass(clock, calls, key_ids(run.keys, [0]), dropped, step=2)
    fast += run.clients(1, 2)
    result = run.server.result()

    assert [client.status() for client in fast] == [0, 0, 0]
    assert task.round == 1
    with RunStore.open(result.run_path, readonly=True) as store:
        reasons = [(r, reason) for r, c, phase, reason in store.failures() if c == 3 and phase == "fit"]
    # dropped in step 1's buffer; found after 3 or more of the clock's 2 s steps (the driver looks twice a second)
    ((step, reason),) = reasons
    silent = re.fullmatch(r"no contact for (\d+) s \(server\.heartbeat_timeout=5 s\)", reason)
    assert step == 1 and silent is not None and int(silent.group(1)) >= 6
    assert [(r.round, r.completed, r.aggregated) for r in result.history] == [(n, 2, True) for n in (1, 2, 3, 4)]


def _driver(
    tmp_path: Path, name: str, clock: ManualClock, *extra: str
) -> tuple[BufferedServer, Coordinator, AsyncLedger]:
    """A FedBuff driver on the run store at ``tmp_path/name`` (created, or resumed as a
    restarted server resumes it), with no transport: results are settled directly."""
    config = fedbuff_config(tmp_path, "rounds=1", *extra)
    parts = assemble(config, population=4, task=deployment_task(config), deployed=True, secret=b"s" * 32)
    path = tmp_path / f"{name}.sqlite"
    store = open_or_create_store(path, config, parts.initial, parts.strategy.init(parts.initial), parts.meta)
    coordinator = Coordinator({c: str(c) for c in range(4)}, config.server, clock=clock)
    population = Population((0, 1, 2, 3), (0, 1, 2, 3), secret=b"s" * 32)
    backend = DeploymentBackend(coordinator, store)
    federated = Federated(config, parts.task, population, parts.strategy, backend, store, parts.limits)
    ledger = AsyncLedger(path)
    return BufferedServer(federated, coordinator, ledger), coordinator, ledger


def _result(driver: BufferedServer, client: int, shift: float, round: int = 1) -> ReceivedResult:
    delta = driver.params.map(lambda a: np.full_like(a, shift))
    return ReceivedResult(task_id(round, "fit", client), f"u{client}", "fit", round, num_examples=10, delta=delta)


def test_a_restarted_server_accepts_results_for_the_tasks_it_recorded_and_ends_with_the_same_model(
    tmp_path: Path,
) -> None:
    clock = ManualClock()
    # Uninterrupted: clients 0 and 1 pull version 0; client 1's result, then client 0's.
    straight, coordinator, ledger = _driver(tmp_path, "straight", clock)
    coordinator.post(straight.work)  # as run() posts it; results are settled before it runs here
    coordinator.touch(0), coordinator.touch(1)
    assert coordinator.task_for(0) is not None and coordinator.task_for(1) is not None
    assert coordinator.settle(1, task_id(1, "fit", 1), "u1", result=_result(straight, 1, 0.25))[0] == "accepted"
    assert coordinator.settle(0, task_id(1, "fit", 0), "u0", result=_result(straight, 0, 0.5))[0] == "accepted"
    history, expected = straight.run()
    ledger.close()
    straight.parts.store.close()

    # Killed after client 1's update was accepted: the same arrivals across a restart.
    before, coordinator, ledger = _driver(tmp_path, "killed", clock)
    coordinator.post(before.work)
    coordinator.touch(0), coordinator.touch(1)
    assert coordinator.task_for(0) is not None and coordinator.task_for(1) is not None
    assert coordinator.settle(1, task_id(1, "fit", 1), "u1", result=_result(before, 1, 0.25))[0] == "accepted"
    ledger.close()  # kill -9: nothing else is written
    before.parts.store.close()
    after, coordinator, ledger = _driver(tmp_path, "killed", clock)

    assert sorted(after.work.slots) == [0] and after.work.slots[0].state == "sent"  # its task, open again
    assert after.holding == {0, 1} and after.counts == {1: 1}
    assert coordinator.task_for(1) is None  # it trained from this model already
    coordinator.post(after.work)
    unknown = coordinator.settle(2, task_id(1, "fit", 2), "u2", result=_result(after, 2, 9.0))
    assert unknown[0] == "stale"  # a task this server never handed out
    assert coordinator.settle(0, task_id(1, "fit", 0), "u0", result=_result(after, 0, 0.5))[0] == "accepted"
    resumed, params = after.run()
    ledger.close()
    after.parts.store.close()

    assert params.array_equal(expected)
    assert [r.fit["staleness_max"] for r in resumed] == [r.fit["staleness_max"] for r in history]


def test_a_client_still_training_when_the_run_ends_hears_it_from_its_heartbeats_and_exits(
    fedbuff: Callable[..., FedBuffDeployment], gate: None, logs: pytest.LogCaptureFixture
) -> None:
    run = fedbuff("rounds=2", "heartbeat_interval=0.05")
    (slow,) = run.clients(3, task=GATED)
    fast = run.clients(0)  # min_clients=2
    wait_for(lambda: any(e["client"] == 3 for e in events(logs, "task_issued")), 60, "the slow client's task")
    fast += run.clients(1, 2)
    result = run.server.result()  # the server has stopped: the slow client can deliver nothing
    GATE.set()

    assert [client.status() for client in fast] == [0, 0, 0]
    assert slow.status(60) == 0  # it heard "finished" in a heartbeat reply while it trained
    assert len(result.history) == 2


def test_a_client_with_two_updates_in_one_steps_buffer_has_both_recorded_and_both_in_the_step(
    tmp_path: Path,
) -> None:
    # Client 0 trains from version 0; steps 1 fills without it (clients 1 and 2), so its update
    # waits in step 2's buffer, 1 step stale; after step 1 it pulls version 1 and trains again:
    # step 2's buffer holds two updates of client 0. The order is forced: no timing involved.
    clock = ManualClock()
    driver, coordinator, ledger = _driver(tmp_path, "twice", clock, "rounds=2")
    coordinator.post(driver.work)
    for client in (0, 1, 2):
        coordinator.touch(client)
        assert coordinator.task_for(client) is not None
    for client, shift in ((1, 0.25), (2, 0.5), (0, 0.125)):
        settled = coordinator.settle(
            client, task_id(1, "fit", client), f"u{client}", result=_result(driver, client, shift)
        )
        assert settled[0] == "accepted"
    assert coordinator.task_for(0) is None  # it trained from version 0 already
    answers: list[str] = []

    def pull_again() -> None:  # as the service's handlers do, on their own thread
        wait_for(lambda: driver.version == 1, 60, "step 1")
        answers.append("task" if coordinator.task_for(0) is not None else "none")  # version 1: it may train again
        again = _result(driver, 0, 0.0625, round=2)
        answers.append(coordinator.settle(0, task_id(2, "fit", 0), "u0-again", result=again)[0])

    client = threading.Thread(target=pull_again)
    client.start()
    try:
        _, params = driver.run()
    finally:
        client.join(60)
    assert answers == ["task", "accepted"]
    ledger.close()
    driver.parts.store.close()

    store = RunStore.open(tmp_path / "twice.sqlite", readonly=True)
    with store:
        records = [(rec.client_id, rec.metrics["staleness"]) for _, rec in store.client_records(round=2, phase="fit")]
        (step2,) = [r for r in store.history() if r.round == 2]
        before = store.params(1)
        state = store.state(1, template=driver.template)
    assert records == [(0, 1.0), (0, 0.0)] and step2.completed == 2
    buffered = AsyncLedger(tmp_path / "twice.sqlite")
    try:
        updates = buffered.buffered(2)
    finally:
        buffered.close()
    assert [(u.client_id, s) for u, s in updates] == [(0, 1), (0, 0)]
    config = driver.parts.config
    step = buffer_step(driver.parts.strategy, updates, before, state, RoundContext(2, before, config.seed, 4), config)
    assert step.params.array_equal(params)
