"""A client with a valid key attacks the server: each attack is refused, logged, and the run goes on.

Every test runs a whole deployment in this process (the in-process transport, a manual clock
for the coordinator) with honest clients beside the rogue of :mod:`tests.deploy.rogue`, which
speaks the real protocol and lies about one thing at a time.
"""

from __future__ import annotations

import math
import threading
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from sheaf.core.config import RunConfig
from sheaf.deploy._proto import federation_pb2 as pb
from sheaf.deploy.auth import BodyDigest, load_identity
from sheaf.deploy.inprocess import InProcessTransport
from sheaf.deploy.keys import KeySet, init_keys, new_client_key
from sheaf.deploy.rpc import RpcError
from sheaf.deploy.server import ServerResult
from sheaf.deploy.transport import METHODS
from sheaf.deploy.wire import PROTOCOL
from sheaf.evaluation.history import RoundRecord
from sheaf.run.store import RunStore
from tests.deploy.conftest import (
    Calls,
    HoldAfter,
    ManualClock,
    client_files,
    deploy_config,
    events,
    key_ids,
    let_time_pass,
    simulate_inline,
    start_client,
    start_server,
)
from tests.deploy.rogue import rogue, roomy_in_process, stalled_pushes


def _train_sizes(files: list[Path]) -> list[int]:
    return [len(np.load(path)["y"]) for path in files]


def _failures(run_path: Path) -> dict[int, list[tuple[int, str, str]]]:
    """Recorded failures by client: ``(round, phase, reason)``."""
    found: dict[int, list[tuple[int, str, str]]] = {}
    with RunStore.open(run_path, readonly=True) as store:
        for round, client, phase, reason in store.failures():
            found.setdefault(client, []).append((round, phase, reason))
    return found


def _beside_three_honest(
    tmp_path: Path,
    keys: KeySet,
    transport: InProcessTransport,
    settings: list[str],
    modes: list[str],
    *,
    evaluation: str = "fail",
    until_finished: bool = False,
) -> tuple[list[str], ServerResult]:
    """Run a deployment of three honest clients with the rogue as client 3, sending ``modes``.

    Returns the rogue's lines and the run's result, once every honest client has exited cleanly.
    """
    config = deploy_config(tmp_path, *settings)
    files = client_files(config, tmp_path / "data")
    clock, calls = ManualClock(), Calls(transport)
    server = start_server(config, keys, transport=transport, clock=clock)
    honest = [start_client(transport, keys.client_keys[i], files[i], tmp_path / "state") for i in range(3)]
    lines = transport.run(
        rogue(
            roomy_in_process(transport),
            keys.client_keys[3],
            modes,
            evaluation=evaluation,
            until_finished=until_finished,
        )
    )
    let_time_pass(clock, calls, key_ids(keys, range(3)), server.done, step=3)
    result = server.result()
    assert [client.status() for client in honest] == [0, 0, 0]
    return lines, result


# Weights ------------------------------------------------------------------------------------
def test_declared_weight_caps_leave_an_honest_run_the_simulated_one(
    tmp_path: Path, transport: InProcessTransport
) -> None:
    config = deploy_config(tmp_path, "name=deployed")
    files = client_files(config, tmp_path / "data")
    keys = init_keys(tmp_path / "keys", 4, max_examples=max(_train_sizes(files)))
    server = start_server(config, keys, transport=transport)
    clients = [start_client(transport, keys.client_keys[i], files[i], tmp_path / "state") for i in range(4)]

    result = server.result()

    assert [client.status() for client in clients] == [0, 0, 0, 0]
    simulated = simulate_inline(config.replace(name="simulated"))
    assert result.params.array_equal(simulated.params)
    assert [(r.fit, r.federated) for r in result.history] == [(r.fit, r.federated) for r in simulated.history]


def test_a_client_claiming_more_examples_than_declared_is_refused_and_cannot_set_the_model(
    tmp_path: Path, transport: InProcessTransport, logs: pytest.LogCaptureFixture
) -> None:
    settings = ["rounds=4", "evaluation.interval=100", "heartbeat_interval=0.05"]
    cap = max(_train_sizes(client_files(deploy_config(tmp_path, *settings), tmp_path / "data")))
    keys = init_keys(tmp_path / "keys", 4, max_examples=cap)

    # 50,000 is within server.max_examples (100,000) but not within what client 3's line declares;
    # 10**12 once set the round's change alone; 2**63-1 once wrapped the int64 weight sum negative.
    claims = ["weight:50000", "weight:1000000000000", f"weight:{2**63 - 1}"]
    lines, result = _beside_three_honest(tmp_path, keys, transport, settings, claims)

    assert lines[0].startswith("weight:50000 REJECTED round=1")
    assert f"claims 50000 examples, more than the {cap} this run accepts from it" in lines[0]
    assert lines[1].startswith("weight:1000000000000 REJECTED round=2") and "claims 1000000000000 examples" in lines[1]
    assert lines[2].startswith(f"weight:{2**63 - 1} REJECTED round=3") and f"claims {2**63 - 1} examples" in lines[2]
    assert [(r.aggregated, r.completed) for r in result.history] == [(True, 3)] * 4
    with RunStore.open(result.run_path, readonly=True) as store:
        first = {name: store.params(1)[name] - store.params(0)[name] for name in store.params(0)}
        assert all(not store.params(r).array_equal(store.params(r - 1)) for r in range(1, 5))  # every round moved
    assert not all(np.allclose(delta, 0.01, atol=1e-3) for delta in first.values())  # not the rogue's delta
    failures = _failures(result.run_path)
    assert set(failures) == {3}  # only the rogue is blamed
    assert "claims 50000 examples" in failures[3][0][2]
    assert [e["client"] for e in events(logs, "update_rejected")][:2] == [3, 3]


# Norms --------------------------------------------------------------------------------------
def test_a_finite_but_huge_delta_is_refused_by_name_and_the_honest_clients_train_on(
    tmp_path: Path, keys: KeySet, transport: InProcessTransport
) -> None:
    settings = ["rounds=3", "evaluation.interval=100", "heartbeat_interval=0.05"]
    lines, result = _beside_three_honest(tmp_path, keys, transport, settings, ["norm:1e30"] * 3)

    assert [line.split(" ")[1] for line in lines] == ["REJECTED"] * 3
    assert all("accepts updates of L2 norm at most" in line for line in lines)
    assert [(r.aggregated, r.completed, r.note) for r in result.history] == [(True, 3, "")] * 3
    assert result.params.all_finite()
    assert set(_failures(result.run_path)) == {3}


# Strategy inputs ------------------------------------------------------------------------------
class _StopAfter:
    """A round listener that stops the server (as a kill would) once round ``round`` is committed."""

    def __init__(self, round: int) -> None:
        self.round = round
        self.stopped = threading.Event()

    def on_start(self, config: RunConfig, first_round: int, cohort: int, population: int) -> None:
        pass

    def on_round(self, record: RoundRecord) -> None:
        if record.round == self.round:
            self.stopped.set()
            raise KeyboardInterrupt  # what Ctrl-C or SIGTERM raises in `sheaf server`


@pytest.mark.parametrize(
    ("strategy", "lie", "reason"),
    [
        ("qfedavg", "metrics:qffl_loss=1.0,qffl_lipschitz=1e200", "'qffl_lipschitz' in [1e-06, 1e+09], got 1e+200"),
        ("fednova", "metrics:fednova_norm=5e-324", "'fednova_norm' in [1, 1e+09], got 5e-324"),
    ],
)
def test_strategy_inputs_out_of_their_range_are_refused_before_and_after_a_restart(
    tmp_path: Path, keys: KeySet, transport: InProcessTransport, strategy: str, lie: str, reason: str
) -> None:
    config = deploy_config(
        tmp_path, f"strategy={strategy}", "rounds=3", "evaluation.interval=100", "heartbeat_interval=0.05"
    )
    files = client_files(config, tmp_path / "data")
    clock, calls = ManualClock(), Calls(transport)
    stop = _StopAfter(1)
    first = start_server(config, keys, transport=transport, clock=clock, listener=stop)
    honest = [start_client(transport, keys.client_keys[i], files[i], tmp_path / "state") for i in range(3)]

    before = transport.run(rogue(roomy_in_process(transport), keys.client_keys[3], [lie]))
    with pytest.raises(KeyboardInterrupt):
        first.result()
    second = start_server(config, keys, transport=transport, clock=clock)  # the same command again
    after = transport.run(rogue(roomy_in_process(transport), keys.client_keys[3], [lie]))
    let_time_pass(clock, calls, key_ids(keys, range(3)), second.done, step=3)
    result = second.result()

    assert [client.status() for client in honest] == [0, 0, 0]
    assert before[0].startswith(f"{lie} REJECTED round=1") and reason in before[0]
    assert after[0].startswith(f"{lie} REJECTED round=2") and reason in after[0]
    assert [(r.aggregated, r.completed) for r in result.history] == [(True, 3)] * 3
    assert result.params.all_finite()
    assert set(_failures(result.run_path)) == {3}


# Memory --------------------------------------------------------------------------------------
def test_header_only_result_streams_leave_the_servers_memory_flat_and_end_with_their_slot(
    tmp_path: Path, keys: KeySet, transport: InProcessTransport
) -> None:
    config = deploy_config(tmp_path, "rounds=1", "evaluation.federated=false", "heartbeat_interval=0.05")
    files = client_files(config, tmp_path / "data")
    clock, calls = ManualClock(), Calls(transport)
    server = start_server(config, keys, transport=transport, clock=clock)
    honest = [start_client(transport, keys.client_keys[i], files[i], tmp_path / "state") for i in range(3)]
    lines: list[str] = []
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        # 200 streams, each a header declaring the most the server accepts (about 1 MiB here).
        run = transport.submit(
            stalled_pushes(roomy_in_process(transport), keys.client_keys[3], 200, on_line=lines.append)
        )
        deadline = time.monotonic() + 30
        while len(lines) < 199 and tracemalloc.get_traced_memory()[0] - before < 100 << 20:
            assert time.monotonic() < deadline, "the streams never reached the server"
            time.sleep(0.05)
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    let_time_pass(clock, calls, key_ids(keys, range(3)), lambda: len(lines) == 200, step=3)  # client 3 is silent
    let_time_pass(clock, calls, key_ids(keys, range(3)), server.done, step=3)
    result = server.result()

    assert grown < 8 << 20, f"{grown / 2**20:.0f} MiB held for 200 headers"
    assert sorted(line.split(" ")[0] for line in lines[:199]) == ["RESOURCE_EXHAUSTED"] * 199
    assert "one result stream at a time" in lines[0]
    # The one stream let in was given up when the client's share of the round was dropped
    # (or, if the round was over by the time the stream heard, because it was).
    assert lines[199].startswith("STALE task r1-fit-c3 ")
    assert run.result(10) == lines
    assert [client.status() for client in honest] == [0, 0, 0]
    assert [(r.aggregated, r.completed) for r in result.history] == [(True, 3)]


# Unbounded inputs -----------------------------------------------------------------------------
def test_metrics_past_their_caps_or_nan_refuse_the_update_with_one_line(
    tmp_path: Path, keys: KeySet, transport: InProcessTransport
) -> None:
    settings = ["rounds=3", "evaluation.interval=100", "heartbeat_interval=0.05"]
    modes = ["metric_count:40000", "metrics:train_loss=nan", "metrics:" + "m" * 101 + "=1"]
    lines, result = _beside_three_honest(tmp_path, keys, transport, settings, modes)

    assert [line.split(" ")[1] for line in lines] == ["REJECTED"] * 3
    assert "carries 40000 metrics, more than the 256 accepted" in lines[0]
    assert "metric 'train_loss' is NaN" in lines[1]
    assert "is over 100 characters" in lines[2]
    with RunStore.open(result.run_path, readonly=True) as store:
        names = {name for _, record in store.client_records() for name in record.metrics}
    assert names <= {"train_loss", "steps", "loss", "accuracy"}
    assert [r.completed for r in result.history] == [3, 3, 3]


@pytest.mark.parametrize("claim", [10**12, 500_000])
def test_an_evaluation_claiming_too_many_examples_does_not_set_the_federated_accuracy(
    tmp_path: Path, keys: KeySet, transport: InProcessTransport, claim: int
) -> None:
    settings = ["rounds=2", "evaluation.interval=1", "heartbeat_interval=0.05"]
    lines, result = _beside_three_honest(
        tmp_path, keys, transport, settings, ["honest"] * 2, evaluation=f"claim:{claim}", until_finished=True
    )

    assert [line.split(" ")[1] for line in lines] == ["ACCEPTED", "ACCEPTED"]
    with RunStore.open(result.run_path, readonly=True) as store:
        evaluated = [(r, c) for r, c in store.client_records(phase="evaluate")]
        reasons = [reason for _, client, phase, reason in store.failures() if phase == "evaluate"]
    assert {c.client_id for _, c in evaluated} == {0, 1, 2}
    assert len(reasons) == 2 and all(f"claims {claim} examples" in reason for reason in reasons)
    last = [c for r, c in evaluated if r == 2]
    honest_mean = sum(c.metrics["accuracy"] * c.num_examples for c in last) / sum(c.num_examples for c in last)
    assert result.history.final_federated["accuracy"]["weighted_mean"] == pytest.approx(honest_mean)
    assert honest_mean > 0.5


def test_requests_with_nonsense_in_bounded_fields_are_refused_and_logged_once_per_peer(
    tmp_path: Path, keys: KeySet, transport: InProcessTransport, logs: pytest.LogCaptureFixture
) -> None:
    stranger = tmp_path / "stranger.key"
    new_client_key(stranger, 7, "stranger")
    config = deploy_config(tmp_path, "rounds=1", "evaluation.federated=false")
    files = client_files(config, tmp_path / "data")
    server = start_server(config, keys, transport=transport)
    identity = load_identity(keys.client_keys[0])

    async def send() -> list[str]:
        channel, outcomes = transport.connect(), []
        join = pb.JoinRequest(protocol=PROTOCOL).SerializeToString()
        signed = identity.sign(METHODS["Join"], BodyDigest().update(join).digest())
        long_time = [(k, "9" * 400 if k == "sheaf-time" else v) for k, v in signed]
        run_id = pb.JoinReply.FromString(
            await channel.unary_unary(METHODS["Join"], join, metadata=signed, timeout=10)
        ).run_id
        nan_wait = pb.PullRequest(run_id=run_id, wait_seconds=math.nan).SerializeToString()
        strangers = [load_identity(stranger).sign(METHODS["Join"], BodyDigest().update(join).digest())] * 100
        attempts = [
            ("Join", join, long_time),
            ("PullTask", nan_wait, identity.sign(METHODS["PullTask"], BodyDigest().update(nan_wait).digest())),
            *(("Join", join, metadata) for metadata in strangers),
        ]
        for method, body, metadata in attempts:
            try:
                if method == "PullTask":
                    async for _ in channel.unary_stream(METHODS[method], body, metadata=metadata, timeout=10):
                        pass
                else:
                    await channel.unary_unary(METHODS[method], body, metadata=metadata, timeout=10)
                outcomes.append("OK")
            except RpcError as exc:
                outcomes.append(f"{exc.code.name}: {exc.details}")
        await channel.close()
        return outcomes

    outcomes = transport.run(send(), timeout=60)
    clients = [start_client(transport, keys.client_keys[i], files[i], tmp_path / "state") for i in range(4)]
    result = server.result()

    assert outcomes[0].startswith("UNAUTHENTICATED: malformed sheaf-time metadata")
    assert outcomes[1] == "INVALID_ARGUMENT: wait_seconds must be a finite number of seconds, got nan"
    assert all(o.startswith("UNAUTHENTICATED: unknown client key") for o in outcomes[2:])
    refused = events(logs, "request_refused") + events(logs, "request_malformed")
    assert any("malformed sheaf-time" in e["reason"] for e in refused)
    assert len(refused) == 10  # one peer: at most 10 lines a minute, however many requests
    assert result.history.rounds_completed == 1 and [c.status() for c in clients] == [0, 0, 0, 0]


# Lost clients ---------------------------------------------------------------------------------
def _waiting(logs: pytest.LogCaptureFixture, round: int) -> bool:
    return any(e.get("round") == round for e in events(logs, "waiting_for_clients"))


def test_a_round_short_of_clients_waits_for_a_killed_client_to_rejoin(
    tmp_path: Path, keys: KeySet, transport: InProcessTransport, logs: pytest.LogCaptureFixture
) -> None:
    # The heart example's shape: four clients, every one needed in every round.
    config = deploy_config(
        tmp_path, "rounds=4", "min_clients=4", "evaluation.interval=100", "heartbeat_interval=0.05",
        "min_clients_wait=300",
    )  # fmt: skip
    files = client_files(config, tmp_path / "data")
    clock, calls, hold = ManualClock(), Calls(transport), HoldAfter(1)
    server = start_server(config, keys, transport=transport, clock=clock, listener=hold)
    clients = [start_client(transport, keys.client_keys[i], files[i], tmp_path / "state") for i in range(4)]
    assert hold.reached.wait(60)
    clients[3].future.cancel()  # killed: it stops calling at once
    hold.go.set()

    let_time_pass(clock, calls, key_ids(keys, range(3)), lambda: _waiting(logs, 3), step=3)
    back = start_client(transport, keys.client_keys[3], files[3], tmp_path / "state")  # restarted
    let_time_pass(clock, calls, key_ids(keys, range(3)), server.done, step=3)
    result = server.result()

    assert [client.status() for client in [*clients[:3], back]] == [0, 0, 0, 0]
    assert [(r.aggregated, r.completed) for r in result.history] == [(True, 4), (False, 0), (True, 4), (True, 4)]
    assert result.skipped_rounds == (2,)
    assert [e["round"] for e in events(logs, "round_skipped")] == [2]
    assert "fewer than strategy.min_clients=4" in events(logs, "round_skipped")[0]["reason"]
    assert [e["skipped_rounds"] for e in events(logs, "run_finished") if "skipped_rounds" in e] == [[2]]


def test_rounds_whose_clients_do_not_come_back_wait_their_limit_then_are_skipped_and_said_so(
    tmp_path: Path, transport: InProcessTransport, logs: pytest.LogCaptureFixture
) -> None:
    keys = init_keys(tmp_path / "keys", 10)
    config = deploy_config(
        tmp_path, "clients=10", "rounds=3", "min_clients=6", "evaluation.interval=100", "heartbeat_interval=0.05",
        "min_clients_wait=120",
    )  # fmt: skip
    files = client_files(config, tmp_path / "data")
    clock, calls, hold = ManualClock(), Calls(transport), HoldAfter(1)
    server = start_server(config, keys, transport=transport, clock=clock, listener=hold)
    clients = [start_client(transport, keys.client_keys[i], files[i], tmp_path / "state") for i in range(10)]
    assert hold.reached.wait(60)
    for client in clients[5:]:
        client.future.cancel()  # five of ten killed
    hold.go.set()
    let_time_pass(clock, calls, key_ids(keys, range(5)), lambda: _waiting(logs, 3), step=3)
    waiting_since = clock.now
    let_time_pass(clock, calls, key_ids(keys, range(5)), server.done, step=3)
    result = server.result()

    assert [client.status() for client in clients[:5]] == [0] * 5
    assert [r.aggregated for r in result.history] == [True, False, False]
    assert result.skipped_rounds == (2, 3)
    assert [e["round"] for e in events(logs, "round_skipped")] == [2, 3]
    gave_up = events(logs, "clients_not_back")
    assert [(e["round"], e["connected"], e["needed"]) for e in gave_up] == [(3, 5, 6)]
    assert gave_up[0]["waited_seconds"] >= 120 and clock.now - waiting_since >= 120  # the coordinator's clock
