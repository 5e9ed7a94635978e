"""End to end: real ``sheaf server`` and ``sheaf client`` processes on loopback.

Each test starts its processes through the CLI (the ``processes`` fixture kills every one
when the test ends, pass or fail), waits on their logs and run store, and checks what a
user would: the model, the store, the logs, the exit statuses.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from sheaf.core.config import load_config
from sheaf.deploy.keys import KeySet, init_keys
from sheaf.run.simulate import simulate
from sheaf.run.store import RunStore
from tests.deploy.conftest import ROOT, Processes, client_files, deploy_config, free_port, wait_for

pytestmark = pytest.mark.e2e

#: Generous limits for a loaded machine; a quiet one takes a few seconds per test.
STARTUP = 120.0


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
        *extra,
    ]


def test_four_hospitals_as_processes_train_the_simulated_model(tmp_path: Path, processes: Processes) -> None:
    heart = ROOT / "examples" / "heart"
    subprocess.run([sys.executable, str(heart / "split_csv.py"), "--out", str(tmp_path / "hospitals")], check=True)
    keys = init_keys(tmp_path / "keys", ["cleveland", "hungary", "switzerland", "va-long-beach"])
    overrides = [f"runs_dir={tmp_path / 'runs'}", "heartbeat_interval=0.5", "heartbeat_timeout=20"]
    port, run = free_port(), tmp_path / "heart.sqlite"
    sets = [arg for item in overrides for arg in ("--set", item)]
    processes.start(
        "server", "server", str(heart / "heart.toml"), *sets, "--address", f"127.0.0.1:{port}",
        "--keys", str(keys.folder), "--run", str(run),
    )  # fmt: skip
    for client_id, data in enumerate(sorted((tmp_path / "hospitals").glob("*.csv"))):
        processes.start(f"hospital{client_id}", *_client_args(port, keys, client_id, data, tmp_path / "state"))

    assert processes.wait("server", STARTUP) == 0, processes.log("server")[-3000:]
    for client_id in range(4):
        assert processes.wait(f"hospital{client_id}", 30) == 0

    simulated = simulate(load_config(heart / "heart.toml", [*overrides, "name=simulated"]))
    with RunStore.open(run, readonly=True) as store:
        deployed_params, history = store.params(), store.history()
        names = store.meta["client_names"]
    assert deployed_params.array_equal(simulated.params)
    # Every hospital evaluates on its own test split: the weighted mean over the four is the
    # accuracy on the union of their test splits, the simulation's central test set.
    deployed_accuracy = history.final_federated["accuracy"]["weighted_mean"]
    assert deployed_accuracy == pytest.approx(simulated.history.final_central["accuracy"], abs=1e-12)
    assert deployed_accuracy > 0.75
    assert names == ["cleveland", "hungary", "switzerland", "va-long-beach"]
    assert "round_done round=50" in processes.log("server")


def test_a_client_killed_mid_round_drops_out_and_the_run_finishes(tmp_path: Path, processes: Processes) -> None:
    keys = init_keys(tmp_path / "keys", 3)
    overrides = [*_small(tmp_path), "clients=3", "min_clients=2", "rounds=5"]
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


def _small(tmp_path: Path) -> list[str]:
    from tests.deploy.conftest import DEPLOY

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
        processes.start(f"client{i}", *args, env={"SHEAF_TEST_FIT_SECONDS": "0.8"})
    wait_for(lambda: _last_round(run) >= 2, STARTUP, "two committed rounds")
    live = _status(run)
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
    uninterrupted = simulate(load_config(overrides=[*overrides, "name=uninterrupted"]))
    with RunStore.open(run, readonly=True) as store:
        assert store.last_round == 6
        assert store.params().array_equal(uninterrupted.params)
        assert [r.completed for r in store.history()] == [3] * 6
    assert f"last_round={killed_at}" in processes.log("server-again")
    assert "connection_lost" in processes.log("client0")
    finished = _status(run)
    assert finished["status"] == "finished" and finished["server"]["state"] == "finished"


def _status(run: Path) -> dict[str, object]:
    out = subprocess.run(
        [sys.executable, "-m", "sheaf", "status", str(run), "--json"], capture_output=True, text=True, cwd=ROOT
    )
    assert out.returncode == 0, out.stderr
    status: dict[str, object] = json.loads(out.stdout)
    return status


def test_unknown_keys_replays_and_plaintext_clients_are_refused(tmp_path: Path, processes: Processes) -> None:
    import asyncio

    import grpc

    from sheaf.deploy._proto import federation_pb2 as pb
    from sheaf.deploy.auth import BodyDigest, load_identity
    from sheaf.deploy.keys import new_client_key
    from sheaf.deploy.transport import METHODS

    keys = init_keys(tmp_path / "keys", 2)
    stranger = tmp_path / "stranger.key"
    new_client_key(stranger, 7, "stranger")
    files = client_files(deploy_config(tmp_path), tmp_path / "data")
    port, run = free_port(), tmp_path / "run.sqlite"
    processes.start("server", *_server_args([*_small(tmp_path), "clients=2", "min_clients=2"], port, keys, run))
    wait_for(lambda: "listening" in processes.log("server"), STARTUP, "the server to listen")

    args = _client_args(port, keys, 0, files[0], tmp_path / "state")
    processes.start("stranger", *[str(stranger) if a == str(keys.client_keys[0]) else a for a in args])
    plaintext = [
        a for a in _client_args(port, keys, 1, files[1], tmp_path / "s") if a not in ("--ca", str(keys.ca_cert))
    ]
    processes.start("plaintext", *plaintext, "--insecure", "--give-up-after", "3")

    assert processes.wait("stranger", STARTUP) == 2
    assert f"error: server localhost:{port} refused this client: unknown client key" in processes.log("stranger")
    assert processes.wait("plaintext", STARTUP) == 1
    assert "giving_up" in processes.log("plaintext")

    async def join_twice() -> list[str]:
        identity = load_identity(keys.client_keys[0])
        body = pb.JoinRequest(protocol=1).SerializeToString()
        metadata = identity.sign(METHODS["Join"], BodyDigest().update(body).digest())
        credentials = grpc.ssl_channel_credentials(root_certificates=keys.ca_cert.read_bytes())
        outcomes = []
        async with grpc.aio.secure_channel(f"localhost:{port}", credentials) as channel:
            join = channel.unary_unary(METHODS["Join"])
            for _ in range(2):  # the very same signed request, sent again: a replay
                try:
                    reply = pb.JoinReply.FromString(await join(body, metadata=metadata, timeout=30))
                    outcomes.append(f"joined as {reply.client_id}")
                except grpc.aio.AioRpcError as exc:
                    outcomes.append(f"{exc.code().name}: {exc.details()}")
        return outcomes

    first, second = asyncio.run(join_twice())
    assert first == "joined as 0"
    assert second.startswith("UNAUTHENTICATED: replayed request")
    log = processes.log("server")
    assert "request_refused" in log and "unknown client key" in log and "replayed request" in log
    assert "client_joined client=1" not in log  # the plaintext client never got through


def test_bad_updates_from_a_rogue_process_are_rejected_and_logged(tmp_path: Path, processes: Processes) -> None:
    keys = init_keys(tmp_path / "keys", 4)
    modes = ["nan", "shape", "dtype", "oversize"]
    overrides = [*_small(tmp_path), "rounds=5", "evaluation.interval=100"]
    files = client_files(load_config(overrides=overrides), tmp_path / "data")
    port, run = free_port(), tmp_path / "run.sqlite"
    processes.start("server", *_server_args(overrides, port, keys, run))
    for i in range(3):
        processes.start(f"client{i}", *_client_args(port, keys, i, files[i], tmp_path / "state"))
    rogue = subprocess.Popen(
        [sys.executable, "-m", "tests.deploy.rogue", "--port", str(port), "--key", str(keys.client_keys[3]),
         "--ca", str(keys.ca_cert), *modes],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    processes.running["rogue"] = rogue  # type: ignore[assignment]

    assert processes.wait("server", STARTUP) == 0, processes.log("server")[-3000:]
    out = rogue.communicate(timeout=60)[0]
    log = processes.log("server")
    rejected = [line for line in log.splitlines() if "update_rejected client=3" in line]
    assert len(rejected) == 4, log[-3000:]
    assert "NaN or infinite" in rejected[0]
    assert "has shape (3, 3)" in rejected[1]
    assert "has dtype float64" in rejected[2]
    assert "the most accepted" in rejected[3]
    assert out.count("REJECTED") == 4
    with RunStore.open(run, readonly=True) as store:
        assert [r.completed for r in store.history()] == [3] * 5
        assert store.params().all_finite()


def test_a_200_mb_model_travels_in_chunks(tmp_path: Path, processes: Processes) -> None:
    keys = init_keys(tmp_path / "keys", 1)
    overrides = [
        f"runs_dir={tmp_path / 'runs'}", "clients=1", "partition=iid", "fraction=1", "min_clients=1", "rounds=1",
        "evaluation.federated=false", "task=tests.deploy.tasks:BigTask", "heartbeat_interval=0.5",
        "heartbeat_timeout=60", "keep_params=1",
    ]  # fmt: skip
    files = client_files(load_config(overrides=overrides), tmp_path / "data")
    port, run = free_port(), tmp_path / "run.sqlite"
    processes.start("server", *_server_args(overrides, port, keys, run, "--insecure"))
    processes.start("client", *_client_args(port, keys, 0, files[0], tmp_path / "state", "--insecure"))

    assert processes.wait("server", STARTUP) == 0, processes.log("server")[-3000:]
    assert processes.wait("client", 60) == 0
    train_y = np.load(files[0])["y"]
    step = np.float32(float(train_y.mean()) + 1)
    with RunStore.open(run, readonly=True) as store:
        params = store.params()
    assert params["w"].nbytes == 200_000_000
    assert np.all(params["w"] == step) and np.all(params["b"] == -step)
    assert "model_bytes=200000012" in processes.log("server")
