"""Whole deployed runs in one process: the real server round loop, coordinator, auth, wire and
clients, carried by the in-process transport (no sockets, no processes, no real waiting for
timeouts: the coordinator reads a manual clock)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from sheaf.core.config import load_config
from sheaf.data.catalog import build_federation
from sheaf.deploy._proto import federation_pb2 as pb
from sheaf.deploy.auth import BodyDigest, load_identity
from sheaf.deploy.client_state import ClientStateFile
from sheaf.deploy.inprocess import InProcessTransport
from sheaf.deploy.keys import KeySet, init_keys, new_client_key
from sheaf.deploy.rpc import RpcError, StatusCode
from sheaf.deploy.transport import METHODS
from sheaf.deploy.wire import PROTOCOL
from sheaf.evaluation.history import RoundRecord
from sheaf.run.store import RunStore
from tests.deploy.conftest import (
    ROOT,
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
from tests.deploy.rogue import rogue, roomy_in_process
from tests.deploy.tasks import counting_strategy


def test_deployed_run_equals_the_simulated_one(tmp_path: Path, keys: KeySet, transport: InProcessTransport) -> None:
    config = deploy_config(tmp_path, "name=deployed")
    files = client_files(config, tmp_path / "data")
    central = build_federation(config.data, config.seed).central_test
    np.savez(tmp_path / "central.npz", x=central.x, y=central.y)  # the server's own held-out data
    server = start_server(config, keys, transport=transport, test_data=tmp_path / "central.npz")
    clients = [start_client(transport, keys.client_keys[i], files[i], tmp_path / "state") for i in range(4)]

    result = server.result()

    assert [client.status() for client in clients] == [0, 0, 0, 0]
    simulated = simulate_inline(config.replace(name="simulated"))
    assert result.params.array_equal(simulated.params)
    assert list(result.history) == list(simulated.history)  # every figure of every round
    with RunStore.open(result.run_path, readonly=True) as store:
        assert store.meta["status"] == "finished"
        assert store.failures() == []


def test_four_hospitals_with_their_own_csv_files_train_the_simulated_model(
    tmp_path: Path, transport: InProcessTransport, logs: pytest.LogCaptureFixture
) -> None:
    heart = ROOT / "examples" / "heart"
    subprocess.run([sys.executable, str(heart / "split_csv.py"), "--out", str(tmp_path / "hospitals")], check=True)
    keys = init_keys(tmp_path / "keys", ["cleveland", "hungary", "switzerland", "va-long-beach"])
    overrides = [f"runs_dir={tmp_path / 'runs'}", "heartbeat_interval=0.5", "heartbeat_timeout=20"]
    config = load_config(heart / "heart.toml", overrides)
    server = start_server(config, keys, transport=transport, run_path=tmp_path / "heart.sqlite")
    hospitals = sorted((tmp_path / "hospitals").glob("*.csv"))
    clients = [  # the built-in model the run describes
        start_client(transport, keys.client_keys[i], data, tmp_path / "state", task="")
        for i, data in enumerate(hospitals)
    ]

    result = server.result()

    assert [client.status() for client in clients] == [0, 0, 0, 0]
    simulated = simulate_inline(load_config(heart / "heart.toml", [*overrides, "name=simulated"]))
    with RunStore.open(result.run_path, readonly=True) as store:
        deployed_params, history = store.params(), store.history()
        names = store.meta["client_names"]
    assert deployed_params.array_equal(simulated.params)
    # Every hospital evaluates on its own test split: the weighted mean over the four is the
    # accuracy on the union of their test splits, the simulation's central test set.
    deployed_accuracy = history.final_federated["accuracy"]["weighted_mean"]
    assert deployed_accuracy == pytest.approx(simulated.history.final_central["accuracy"], abs=1e-12)
    assert deployed_accuracy > 0.75
    assert names == ["cleveland", "hungary", "switzerland", "va-long-beach"]
    assert events(logs, "round_done")[-1]["round"] == 50


def test_bad_updates_are_rejected_with_reasons_and_the_run_goes_on(
    tmp_path: Path, keys: KeySet, transport: InProcessTransport, logs: pytest.LogCaptureFixture
) -> None:
    modes = ["nan", "shape", "dtype", "oversize", "bigchunk", "tampered", "duplicate"]
    config = deploy_config(tmp_path, f"rounds={len(modes) + 1}", "evaluation.interval=100", "heartbeat_interval=0.05")
    files = client_files(config, tmp_path / "data")
    clock, calls = ManualClock(), Calls(transport)
    server = start_server(config, keys, transport=transport, clock=clock)
    honest = [start_client(transport, keys.client_keys[i], files[i], tmp_path / "state") for i in range(3)]

    lines = transport.run(rogue(roomy_in_process(transport), keys.client_keys[3], modes))
    let_time_pass(clock, calls, key_ids(keys, range(3)), server.done, step=3)  # the rogue is gone: silent
    result = server.result()

    assert [client.status() for client in honest] == [0, 0, 0]
    by_mode = dict(line.split(" ", 1) for line in lines if not line.startswith("duplicate"))
    assert "round=1" in by_mode["nan"]
    assert by_mode["nan"].startswith("REJECTED") and "NaN" in by_mode["nan"]
    assert by_mode["shape"].startswith("REJECTED") and "shape (3, 3)" in by_mode["shape"]
    assert by_mode["dtype"].startswith("REJECTED") and "dtype float64" in by_mode["dtype"]
    assert by_mode["oversize"].startswith("REJECTED") and "the most accepted" in by_mode["oversize"]
    assert by_mode["bigchunk"].startswith("REJECTED") and "chunk size" in by_mode["bigchunk"]
    assert by_mode["tampered"].startswith("UNAUTHENTICATED") and "bad signature" in by_mode["tampered"]
    assert [line.split(" ")[1] for line in lines if line.startswith("duplicate")] == ["ACCEPTED", "DUPLICATE"]
    # Rounds 1-5 rejected; the tampered push of round 6 is refused unauthenticated, so the
    # same task is answered again (the duplicate mode): accepted once, then ignored.
    assert [r.completed for r in result.history] == [3, 3, 3, 3, 3, 4, 3, 3]
    assert result.params.all_finite()
    with RunStore.open(result.run_path, readonly=True) as store:
        reasons = {r: reason for r, c, phase, reason in store.failures() if c == 3 and phase == "fit"}
    assert "NaN" in reasons[1] and "shape" in reasons[2] and "dtype" in reasons[3]
    assert 6 not in reasons and reasons[7].startswith("no contact")
    # Each rejection is logged with its reason, cheapest check first.
    logged = [e["reason"] for e in events(logs, "update_rejected") if e["client"] == 3]
    assert len(logged) == 5
    assert "NaN or infinite" in logged[0] and "has shape (3, 3)" in logged[1] and "has dtype float64" in logged[2]
    assert "the most accepted" in logged[3] and "chunk size" in logged[4]
    assert "bad signature" in events(logs, "request_refused")[-1]["reason"]


def test_client_state_stays_on_the_clients_and_moves_on_as_in_simulation(
    tmp_path: Path, keys: KeySet, transport: InProcessTransport
) -> None:
    config = deploy_config(
        tmp_path, "rounds=6", "fraction=0.5", "min_clients=2", "task=tests.deploy.tasks:CountingTask"
    )
    files = client_files(config, tmp_path / "data")
    server = start_server(config, keys, transport=transport, strategy=counting_strategy())
    clients = [
        start_client(transport, keys.client_keys[i], files[i], tmp_path / "state", task=config.task) for i in range(4)
    ]

    result = server.result()

    assert [client.status() for client in clients] == [0, 0, 0, 0]
    with RunStore.open(result.run_path, readonly=True) as store:
        assert store.clients_with_state == 0  # the server never held a client's state
        used = [(r, c.client_id) for r, c in store.client_records(phase="fit")]
    assert len(used) == 6 * 2  # two of the four clients each round (cohorts from the server's secret)
    for client_id in range(4):
        rounds = [r for r, c in used if c == client_id]
        files = list((tmp_path / "state").glob(f"*-client{client_id}.npz"))
        if not rounds:  # never sampled (probability 1/64): it never trained, so it holds no state
            assert files == []
            continue
        # What it would train with next: the state of its last aggregated round, which counted
        # every round its update was aggregated in, as the simulation's rule moves it on.
        kept = ClientStateFile(files[0]).state_for(config.rounds + 1, aggregated_round=max(rounds))
        assert kept["count"]["n"].tolist() == [float(len(rounds))]


def test_rounds_with_fewer_updates_than_the_minimum_leave_the_model_and_the_run_finishes(
    tmp_path: Path, keys: KeySet, transport: InProcessTransport
) -> None:
    config = deploy_config(tmp_path, "rounds=3", "min_clients=3", "evaluation.interval=100", "heartbeat_interval=0.05")
    files = client_files(config, tmp_path / "data")
    clock, calls = ManualClock(), Calls(transport)
    server = start_server(config, keys, transport=transport, clock=clock)
    honest = [start_client(transport, keys.client_keys[i], files[i], tmp_path / "state") for i in range(2)]
    np.savez(tmp_path / "wrong.npz", x=np.ones((5, 3), np.float32), y=np.zeros(5))
    unfit = start_client(transport, keys.client_keys[2], tmp_path / "wrong.npz", tmp_path / "state")

    transport.run(rogue(transport.connect, keys.client_keys[3], ["duplicate"]))  # one round, then gone
    let_time_pass(clock, calls, key_ids(keys, range(2)), server.done, step=3)
    result = server.result()

    assert "the run's model expects (64,)" in str(unfit.error())  # one clear error, no retries
    assert [r.aggregated for r in result.history] == [True, False, False]
    assert [client.status() for client in honest] == [0, 0]
    with RunStore.open(result.run_path, readonly=True) as store:
        assert store.params(3).array_equal(store.params(1))


def test_a_silent_client_is_dropped_and_takes_part_again_once_it_rejoins(
    tmp_path: Path, keys: KeySet, transport: InProcessTransport
) -> None:
    config = deploy_config(
        tmp_path,
        "rounds=4",
        "min_clients=2",
        "heartbeat_timeout=1",
        "heartbeat_interval=0.05",
        "evaluation.interval=100",
    )
    files = client_files(config, tmp_path / "data")
    clock, calls, in_touch = ManualClock(), Calls(transport), key_ids(keys, range(2))
    hold = HoldAfter(2)  # so the rogue rejoins before round 3 starts, whatever the machine's speed
    server = start_server(config, keys, transport=transport, clock=clock, listener=hold)
    honest = [start_client(transport, keys.client_keys[i], files[i], tmp_path / "state") for i in range(2)]
    answered = threading.Event()

    async def until_round_two_is_over() -> None:
        await asyncio.to_thread(hold.reached.wait, 60)

    def heard(line: str) -> None:
        answered.set()
        if line == "pause rejoined":
            hold.go.set()

    run = transport.submit(
        rogue(
            transport.connect, keys.client_keys[3], ["honest", "pause", "honest"], pause=until_round_two_is_over,
            on_line=heard,
        )
    )  # fmt: skip
    assert answered.wait(60)  # its round-1 update is in: from now on, silence counts
    let_time_pass(clock, calls, in_touch, hold.reached.is_set, step=0.6)  # client 2 never came; the rogue paused
    lines = run.result(60)
    let_time_pass(clock, calls, in_touch, server.done, step=0.6)  # the rogue has left for good
    result = server.result()

    assert [client.status() for client in honest] == [0, 0]
    assert lines[0].startswith("honest ACCEPTED round=1") and lines[1] == "pause rejoined"
    back = int(lines[2].split("round=")[1].split()[0])
    assert lines[2].startswith("honest ACCEPTED") and back > 2
    with RunStore.open(result.run_path, readonly=True) as store:
        dropped = sorted(r for r, c, phase, reason in store.failures() if c == 3 and reason.startswith("no contact"))
        used = sorted(r for r, rec in store.client_records(phase="fit") if rec.client_id == 3)
    assert [r for r in dropped if r <= back] == list(range(2, back))  # gone while silent, then back in
    assert used[:2] == [1, back]


def test_malformed_requests_with_valid_signatures_are_refused_and_the_server_keeps_serving(
    tmp_path: Path, keys: KeySet, transport: InProcessTransport
) -> None:
    config = deploy_config(
        tmp_path, "rounds=1", "min_clients=1", "evaluation.federated=false", "heartbeat_interval=0.05"
    )
    files = client_files(config, tmp_path / "data")
    clock, calls = ManualClock(), Calls(transport)
    server = start_server(config, keys, transport=transport, clock=clock)
    identity = load_identity(keys.client_keys[1])
    garbage = [b"\xff\xff\xff", b"\x0a\x05abc", bytes(range(256)), b"\x08" * 50]

    async def send() -> list[str]:
        codes = []
        channel = transport.connect()
        for method in ("Join", "Heartbeat", "PullTask"):
            for body in garbage:
                metadata = identity.sign(METHODS[method], BodyDigest().update(body).digest())
                try:
                    if method == "PullTask":
                        async for _ in channel.unary_stream(METHODS[method], body, metadata=metadata):
                            pass
                    else:
                        await channel.unary_unary(METHODS[method], body, metadata=metadata, timeout=10)
                    codes.append("OK")
                except RpcError as exc:
                    codes.append(exc.code.name)
        for body in garbage:  # a result stream whose header is nonsense
            metadata = identity.sign(METHODS["PushResult"], BodyDigest().update(body).digest())
            reply = await channel.stream_unary(METHODS["PushResult"], [body, body], metadata=metadata)
            codes.append(f"push:{reply[:2].hex()}")
        await channel.close()
        return codes

    codes = transport.run(send())
    client = start_client(transport, keys.client_keys[0], files[0], tmp_path / "state")
    let_time_pass(clock, calls, key_ids(keys, [0]), server.done, step=3)  # clients 1-3 are silent
    result = server.result()

    assert all(code in ("INVALID_ARGUMENT", "FAILED_PRECONDITION") for code in codes[:12]), codes
    assert all(code == "push:0804" for code in codes[12:]), codes  # PushReply(status=REJECTED)
    assert result.history.rounds_completed == 1 and client.status() == 0


def test_unknown_keys_and_replayed_requests_are_refused_and_logged(
    tmp_path: Path, keys: KeySet, transport: InProcessTransport, logs: pytest.LogCaptureFixture
) -> None:
    stranger = tmp_path / "stranger.key"
    new_client_key(stranger, 7, "stranger")
    config = deploy_config(tmp_path, "rounds=1", "evaluation.federated=false")
    files = client_files(config, tmp_path / "data")
    server = start_server(config, keys, transport=transport)

    refused = start_client(transport, stranger, files[0], tmp_path / "state")
    assert "server in-process refused this client: unknown client key" in str(refused.error())

    async def join_twice() -> list[str]:
        identity = load_identity(keys.client_keys[0])
        body = pb.JoinRequest(protocol=PROTOCOL).SerializeToString()
        metadata = identity.sign(METHODS["Join"], BodyDigest().update(body).digest())
        channel, outcomes = transport.connect(), []
        for _ in range(2):  # the very same signed request, sent again: a replay
            try:
                reply = await channel.unary_unary(METHODS["Join"], body, metadata=metadata, timeout=30)
                outcomes.append(f"joined as {pb.JoinReply.FromString(reply).client_id}")
            except RpcError as exc:
                outcomes.append(f"{exc.code.name}: {exc.details}")
        await channel.close()
        return outcomes

    first, second = transport.run(join_twice())
    clients = [start_client(transport, keys.client_keys[i], files[i], tmp_path / "state") for i in range(4)]
    result = server.result()

    assert first == "joined as 0"
    assert second.startswith("UNAUTHENTICATED: replayed request")
    reasons = [e["reason"] for e in events(logs, "request_refused")]
    assert any("unknown client key" in r for r in reasons) and any("replayed request" in r for r in reasons)
    assert result.history.rounds_completed == 1 and [c.status() for c in clients] == [0, 0, 0, 0]


def test_lost_replies_and_dropped_connections_change_nothing(
    tmp_path: Path, keys: KeySet, transport: InProcessTransport, logs: pytest.LogCaptureFixture
) -> None:
    config = deploy_config(tmp_path, "rounds=3", "name=deployed")
    files = client_files(config, tmp_path / "data")
    drop_after_round_one = _DropAfter(1, transport)
    server = start_server(config, keys, transport=transport, listener=drop_after_round_one)
    # A result is taken by the server, and the reply lost on the way back: delivered again.
    transport.fail_next(StatusCode.UNAVAILABLE, "connection reset", method="PushResult", delivered=True)
    clients = [start_client(transport, keys.client_keys[i], files[i], tmp_path / "state") for i in range(4)]

    result = server.result()

    assert [client.status() for client in clients] == [0, 0, 0, 0]
    assert drop_after_round_one.dropped > 0
    lost = events(logs, "connection_lost")
    assert {e["code"] for e in lost} == {"UNAVAILABLE"}
    assert {e["detail"] for e in lost} == {"connection reset", "connection dropped"}
    assert [e["status"] for e in events(logs, "result_delivered")].count("duplicate") == 1
    assert len(events(logs, "duplicate_ignored")) == 1
    simulated = simulate_inline(config.replace(name="simulated"))
    assert result.params.array_equal(simulated.params)
    assert [r.completed for r in result.history] == [4, 4, 4]


class _DropAfter(HoldAfter):
    """Breaks every connection once round ``round`` is committed (clients wait for the next)."""

    def __init__(self, round: int, transport: InProcessTransport) -> None:
        super().__init__(round)
        self.transport, self.dropped = transport, 0

    def on_round(self, record: RoundRecord) -> None:
        if record.round == self.round:
            self.dropped = self.transport.drop()


def test_a_model_larger_than_any_message_travels_in_chunks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, logs: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("SHEAF_TEST_BIG_ELEMENTS", str(1_000_000))  # 4 MB, twice the link's 2 MiB message limit
    keys = init_keys(tmp_path / "keys", 1)
    config = load_config(overrides=[
        f"runs_dir={tmp_path / 'runs'}", "clients=1", "partition=iid", "fraction=1", "min_clients=1", "rounds=1",
        "evaluation.federated=false", "task=tests.deploy.tasks:BigTask", "heartbeat_interval=0.5",
        "heartbeat_timeout=60", "keep_params=1",
    ])  # fmt: skip
    files = client_files(config, tmp_path / "data")
    with InProcessTransport(max_message_bytes=2 << 20) as transport:
        server = start_server(config, keys, transport=transport)
        client = start_client(transport, keys.client_keys[0], files[0], tmp_path / "state", task=config.task)

        result = server.result()

        assert client.status() == 0
    step = np.float32(float(np.load(files[0])["y"].mean()) + 1)
    assert result.params["w"].nbytes == 4_000_000
    assert np.all(result.params["w"] == step) and np.all(result.params["b"] == -step)
    assert events(logs, "round_started")[0]["model_bytes"] == 4_000_012
    assert events(logs, "round_done")[0]["bytes_received"] > 4_000_000  # the update came back in chunks
