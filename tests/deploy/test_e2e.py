"""End to end over real sockets: what only real processes and a real network show.

Everything a deployment decides — auth, checks, dropouts, client state, DP, equality with
simulation — is tested in one process (``test_deployed.py``, ``test_transport.py``). These
tests keep what needs the real thing: the ``sheaf server`` / ``sheaf client`` commands as
processes (the ``processes`` fixture kills every one when the test ends, pass or fail), a
server killed with SIGKILL and resumed, a client process killed mid-round, a real TLS
handshake that a plaintext client cannot pass, and a large model over a real channel.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from sheaf.core.config import load_config
from sheaf.deploy._proto import federation_pb2 as pb
from sheaf.deploy.async_ledger import AsyncLedger
from sheaf.deploy.auth import BodyDigest, load_identity
from sheaf.deploy.keys import KeySet, init_keys, new_client_key
from sheaf.deploy.rpc import RpcError
from sheaf.deploy.status import run_status
from sheaf.deploy.transport import METHODS, client_channel
from sheaf.deploy.wire import PROTOCOL
from sheaf.run.buffered import buffer_step
from sheaf.run.store import RunStore
from sheaf.strategies.base import RoundContext
from sheaf.strategies.registry import build_strategy
from tests.deploy.conftest import (
    DEPLOY,
    Processes,
    client_files,
    deploy_config,
    events,
    free_port,
    simulate_inline,
    start_client,
    start_server,
    wait_for,
)

pytestmark = pytest.mark.e2e

#: Generous limits for a loaded machine; a quiet one takes a few seconds per test.
STARTUP = 120.0
#: A killed client is dropped after this silence; live clients heartbeat every 0.3 s
#: (conftest.DEPLOY), so 4 s is 13 missed heartbeats, a margin for a loaded machine
#: (1.5 s was 5); it costs each test at most 2.5 s.
HEARTBEAT = "heartbeat_timeout=4"
#: The large model's task, brought by its client.
BIG = "tests.deploy.tasks:BigTask"


def _last_round(path: Path) -> int:
    if not path.exists():
        return 0
    try:
        with RunStore.open(path, readonly=True) as store:
            return store.last_round
    except Exception:  # the server may be creating it right now
        return 0


def _server_args(config_overrides: list[str], port: int, keys: KeySet, run: Path, *extra: str) -> list[str]:
    sets = [arg for item in config_overrides for arg in ("--set", item)]
    return ["server", *sets, "--address", f"127.0.0.1:{port}", "--keys", str(keys.folder), "--run", str(run), *extra]


def _client_args(port: int, keys: KeySet, client_id: int, data: Path, state: Path, *extra: str) -> list[str]:
    return [
        "client",
        "--server",
        f"localhost:{port}",
        "--key",
        str(keys.client_keys[client_id]),
        "--ca",
        str(keys.ca_cert),
        "--data",
        str(data),
        "--state-dir",
        str(state),
        "--max-backoff",
        "0.5",
        "--task",
        "tests.deploy.tasks:softmax",
        *extra,
    ]


def test_a_client_killed_mid_round_drops_out_and_the_run_finishes(tmp_path: Path, processes: Processes) -> None:
    keys = init_keys(tmp_path / "keys", 3)
    overrides = [*_small(tmp_path), "clients=3", "min_clients=2", "rounds=5", HEARTBEAT]
    files = client_files(deploy_config(tmp_path, "clients=3"), tmp_path / "data")
    port, run = free_port(), tmp_path / "run.sqlite"
    processes.start("server", *_server_args(overrides, port, keys, run))
    for i in range(3):
        env = {"SHEAF_TEST_SLOW_ROUND": "3", "SHEAF_TEST_SLOW_SECONDS": "600"} if i == 2 else None
        processes.start(f"client{i}", *_client_args(port, keys, i, files[i], tmp_path / "state"), env=env)

    wait_for(lambda: "task_received kind=fit round=3" in processes.log("client2"), STARTUP, "client 2 to train round 3")
    processes.kill("client2")

    assert processes.wait("server", STARTUP) == 0, processes.log("server")[-3000:]
    assert processes.wait("client0", 30) == 0 and processes.wait("client1", 30) == 0
    with RunStore.open(run, readonly=True) as store:
        history = store.history()
        dropped = [(r, c, reason) for r, c, phase, reason in store.failures() if phase == "fit"]
    assert [r.completed for r in history] == [3, 3, 2, 2, 2]
    assert all(r.aggregated for r in history)
    assert [(r, c) for r, c, _ in dropped] == [(3, 2), (4, 2), (5, 2)]
    assert dropped[0][2].startswith("no contact for")
    assert "client_dropped client=2 round=3" in processes.log("server")


def _dropped_silent(server_log: str, client: int) -> bool:
    """Whether the server's log says it dropped ``client`` for its silence."""
    return any(
        f" client_dropped client={client} " in line and "no contact for" in line for line in server_log.splitlines()
    )


def _small(tmp_path: Path) -> list[str]:
    return [*DEPLOY, f"runs_dir={tmp_path / 'runs'}"]


def test_a_server_killed_with_sigkill_resumes_and_ends_with_the_uninterrupted_model(
    tmp_path: Path, processes: Processes
) -> None:
    keys = init_keys(tmp_path / "keys", 3)
    overrides = [*_small(tmp_path), "clients=3", "rounds=6", "name=resumable"]
    files = client_files(load_config(overrides=overrides), tmp_path / "data")
    port, run = free_port(), tmp_path / "run.sqlite"
    command = _server_args(overrides, port, keys, run)
    processes.start("server", *command)
    for i in range(3):  # slow fits, so the server is killed mid-run
        args = _client_args(port, keys, i, files[i], tmp_path / "state")
        processes.start(f"client{i}", *args, env={"SHEAF_TEST_FIT_SECONDS": "0.5"})
    wait_for(lambda: _last_round(run) >= 2, STARTUP, "two committed rounds")
    live = run_status(run)
    assert live["server"]["state"] == "running"
    assert [c["id"] for c in live["clients"]["connected"]] == [0, 1, 2]
    wait_for(lambda: _last_round(run) >= 3, STARTUP, "three committed rounds")

    processes.kill("server")
    killed_at = _last_round(run)
    assert killed_at < 6
    processes.start("server-again", *command)

    assert processes.wait("server-again", STARTUP) == 0, processes.log("server-again")[-3000:]
    for i in range(3):
        assert processes.wait(f"client{i}", 30) == 0
    uninterrupted = simulate_inline(load_config(overrides=[*overrides, "name=uninterrupted"]))
    with RunStore.open(run, readonly=True) as store:
        assert store.last_round == 6
        assert store.params().array_equal(uninterrupted.params)
        assert [r.completed for r in store.history()] == [3] * 6
    assert f"last_round={killed_at}" in processes.log("server-again")
    assert "connection_lost" in processes.log("client0")
    finished = run_status(run)
    assert finished["status"] == "finished" and finished["server"]["state"] == "finished"


def _join(port: int, keys: KeySet, metadata: Sequence[tuple[str, str]], body: bytes) -> str:
    """Send one Join over TLS with the given signed metadata; the outcome in a line."""

    async def call() -> str:
        channel = client_channel(f"localhost:{port}", ca=keys.ca_cert, insecure=False)
        try:
            reply = await channel.unary_unary(METHODS["Join"], body, metadata=metadata, timeout=30)
            return f"joined as {pb.JoinReply.FromString(reply).client_id}"
        except RpcError as exc:
            return f"{exc.code.name}: {exc.details}"
        finally:
            await channel.close()

    return asyncio.run(call())


def test_a_request_captured_before_a_sigkill_is_refused_as_a_replay_after_the_restart(
    tmp_path: Path, processes: Processes
) -> None:
    keys = init_keys(tmp_path / "keys", 3)
    port, run = free_port(), tmp_path / "run.sqlite"
    command = _server_args([*_small(tmp_path), "clients=3"], port, keys, run)  # no client comes: it waits
    body = pb.JoinRequest(protocol=PROTOCOL).SerializeToString()
    identity = load_identity(keys.client_keys[0])
    captured = identity.sign(METHODS["Join"], BodyDigest().update(body).digest())
    processes.start("server", *command)
    wait_for(lambda: "listening" in processes.log("server"), STARTUP, "the server to listen")
    assert _join(port, keys, captured, body) == "joined as 0"

    processes.kill("server")
    processes.start("server-again", *command)
    wait_for(lambda: "listening" in processes.log("server-again"), STARTUP, "the server to listen again")
    replayed = _join(port, keys, captured, body)
    fresh = _join(port, keys, identity.sign(METHODS["Join"], BodyDigest().update(body).digest()), body)

    assert replayed.startswith("UNAUTHENTICATED: replayed request (nonce already used) from client 0")
    assert fresh == "joined as 0"


def test_over_tls_clients_verify_the_server_and_plaintext_clients_cannot_connect(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="sheaf")
    keys = init_keys(tmp_path / "keys", 3)
    config = deploy_config(tmp_path, "clients=3", "rounds=2", "min_clients=3")
    files = client_files(config, tmp_path / "data")
    # A key the server does not know: had a plaintext request got through, the server would
    # have refused it (and the client would exit 2, refused, not 1, unreachable).
    new_client_key(tmp_path / "plaintext.key", 7, "plaintext")
    server = start_server(config, keys, insecure=False)  # real gRPC with TLS on loopback
    tls = [
        start_client(server.port, keys.client_keys[i], files[i], tmp_path / "s", insecure=False, ca=keys.ca_cert)
        for i in range(3)
    ]
    plaintext = start_client(server.port, tmp_path / "plaintext.key", files[0], tmp_path / "p", give_up_after=1.0)

    result = server.result()

    assert result.history.rounds_completed == 2
    assert [client.status() for client in tls] == [0, 0, 0]
    assert plaintext.status() == 1
    assert events(caplog, "giving_up")
    assert not events(caplog, "request_refused")  # no plaintext request ever reached the server
    assert {e["tls"] for e in events(caplog, "listening")} == {True}


def test_a_large_model_travels_in_chunks_over_a_real_channel(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="sheaf")
    # 20 MB: past gRPC's 16 MiB message limit, so only its 1 MiB chunks get it through (the
    # chunking itself is tested in-process: test_wire.py, test_deployed.py).
    monkeypatch.setenv("SHEAF_TEST_BIG_ELEMENTS", str(5_000_000))
    keys = init_keys(tmp_path / "keys", 1)
    config = load_config(overrides=[
        f"runs_dir={tmp_path / 'runs'}", "clients=1", "partition=iid", "fraction=1", "min_clients=1", "rounds=1",
        "evaluation.federated=false", "task=tests.deploy.tasks:BigTask", "heartbeat_interval=0.5",
        "heartbeat_timeout=60", "keep_params=1",
    ])  # fmt: skip
    files = client_files(config, tmp_path / "data")
    server = start_server(config, keys)  # real gRPC on loopback
    client = start_client(server.port, keys.client_keys[0], files[0], tmp_path / "state", task=BIG)

    result = server.result()

    assert client.status() == 0
    step = np.float32(float(np.load(files[0])["y"].mean()) + 1)
    assert result.params["w"].nbytes == 20_000_000
    assert np.all(result.params["w"] == step) and np.all(result.params["b"] == -step)
    assert events(caplog, "round_started")[0]["model_bytes"] == 20_000_012


def test_secure_aggregation_with_distributed_dp_survives_a_client_killed_after_sharing_keys(
    tmp_path: Path, processes: Processes
) -> None:
    # Five real client processes over real gRPC on loopback; SecAgg+ with distributed DP;
    # client 4 is killed (SIGKILL) once its keys and shares are out, before its masked input.
    keys = init_keys(tmp_path / "keys", 5)
    secure = [
        "secagg.enabled=true", "secagg.dp=distributed", "sampling=poisson", "privacy.noise_multiplier=1",
        "privacy.clip=1", "evaluation.federated=false",
    ]  # fmt: skip
    overrides = [*_small(tmp_path), "clients=5", "min_clients=3", "rounds=3", HEARTBEAT, *secure]
    files = client_files(deploy_config(tmp_path, "clients=5"), tmp_path / "data")
    port, run = free_port(), tmp_path / "run.sqlite"
    processes.start("server", *_server_args(overrides, port, keys, run))
    for i in range(4):
        processes.start(f"client{i}", *_client_args(port, keys, i, files[i], tmp_path / "state"))
    args = _client_args(port, keys, 4, files[4], tmp_path / "state")
    processes.start("client4", *args, module="tests.deploy.stalled_client")

    wait_for(lambda: "stalled after sharing keys" in processes.log("client4"), STARTUP, "client 4 to share its keys")
    processes.kill("client4")

    assert processes.wait("server", STARTUP) == 0, processes.log("server")[-3000:]
    for i in range(4):
        assert processes.wait(f"client{i}", 30) == 0, processes.log(f"client{i}")[-2000:]
    with RunStore.open(run, readonly=True) as store:
        history = store.history()
        first = [(c, reason) for r, c, phase, reason in store.failures() if phase == "fit" and r == 1]
        meta = store.meta
    assert all(r.aggregated for r in history) and len(history) == 3
    assert history[0].fit["secagg_survivors"] == 4 and history[0].fit["secagg_dropped"] == 1
    assert first == [(4, "dropped out of secure aggregation before sending its masked input")]
    epsilons = [r.privacy["epsilon"] for r in history]
    assert 0 < epsilons[0] < epsilons[1] < epsilons[2] < float("inf")
    assert meta["secagg"]["dp"] == "distributed"
    status = run_status(run)
    assert status["secure_aggregation"] and status["distributed_dp"] and status["privacy"]["epsilon"] == epsilons[2]
    assert "secagg_done round=1 survivors=4" in processes.log("server")


def test_fedbuff_deployed_with_a_slow_client_a_client_killed_mid_training_and_a_server_killed_and_restarted(
    tmp_path: Path, processes: Processes
) -> None:
    keys = init_keys(tmp_path / "keys", 4)
    overrides = [
        *_small(tmp_path), "clients=4", "min_clients=2", "rounds=8", HEARTBEAT, "name=fedbuff",
        "asynchronous.enabled=true", "concurrency=3", "buffer=2",
    ]  # fmt: skip
    files = client_files(load_config(overrides=overrides), tmp_path / "data")
    port, run, gate = free_port(), tmp_path / "run.sqlite", tmp_path / "gate"
    command = _server_args(overrides, port, keys, run)
    processes.start("server", *command)
    # The order is forced, not timed (the server's clock is another process's: a test cannot
    # move it). Clients 0-2 wait in every fit until the test opens the gate, so no server step
    # is taken before the killed client 3 is found silent (HEARTBEAT: 13 missed heartbeats of
    # the live clients, a margin for a loaded machine). Client 3 starts with client 0 only
    # (min_clients=2, concurrency=3), so it is sure to get a task.
    seconds = {0: "0.3", 1: "0.3", 2: "2.5", 3: "600"}  # client 2 is slow; client 3 never finishes a fit

    def start(i: int) -> None:
        args = _client_args(port, keys, i, files[i], tmp_path / "state")
        env = {"SHEAF_TEST_FIT_SECONDS": seconds[i], "SHEAF_TEST_FIT_GATE": str(gate)}
        processes.start(f"client{i}", *args, env=env)

    start(3), start(0)
    wait_for(lambda: "task_received kind=fit" in processes.log("client3"), STARTUP, "client 3 to start training")
    processes.kill("client3")
    start(1), start(2)
    wait_for(lambda: _dropped_silent(processes.log("server"), 3), STARTUP, "the killed client 3 to be found silent")
    assert _last_round(run) == 0  # nothing stepped before it: the gate is still closed
    gate.touch()
    wait_for(lambda: _last_round(run) >= 3, STARTUP, "three committed server steps")
    live = run_status(run)
    assert live["server"]["state"] == "running"
    processes.kill("server")
    killed_at = _last_round(run)
    assert killed_at < 8
    processes.start("server-again", *command)

    assert processes.wait("server-again", STARTUP) == 0, processes.log("server-again")[-3000:]
    for i in range(3):
        assert processes.wait(f"client{i}", 60) == 0, processes.log(f"client{i}")[-3000:]
    with RunStore.open(run, readonly=True) as store:
        history = store.history()
        records = store.client_records(phase="fit")
        failures = [(c, reason) for _, c, phase, reason in store.failures() if phase == "fit"]
        before, template = store.params(7), build_strategy(load_config(overrides=overrides).strategy)
        state, final = store.state(7, template=template.init(before)), store.params()
    assert [r.round for r in history] == list(range(1, 9)) and all(r.aggregated for r in history)
    assert all(r.completed == 2 or "buffer flushed" in r.note for r in history)  # K each, unless none could start
    assert all("staleness" in rec.metrics for _, rec in records)
    assert max(r.fit["staleness_max"] for r in history) >= 1  # the slow client's updates arrive late
    assert any(c == 3 and reason.startswith("no contact for") for c, reason in failures)
    assert f"version={killed_at}" in processes.log("server-again").split("fedbuff_started", 1)[1][:300]
    # The last step again, through the simulation's own step function, from what the server buffered.
    ledger = AsyncLedger(run)
    buffered = ledger.buffered(8)
    ledger.close()
    config = load_config(overrides=overrides)
    step = buffer_step(template, buffered, before, state, RoundContext(8, before, config.seed, 4), config)
    assert step.params.array_equal(final)
    finished = run_status(run)
    assert finished["status"] == "finished" and finished["server"]["state"] == "finished"
