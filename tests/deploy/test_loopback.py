"""The real server and clients in one process, over gRPC on loopback (fast integration)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from sheaf.data.catalog import build_federation
from sheaf.deploy.client_state import ClientStateFile
from sheaf.deploy.keys import KeySet
from sheaf.run.simulate import simulate
from sheaf.run.store import RunStore
from tests.deploy.conftest import client_files, deploy_config, start_client, start_server
from tests.deploy.rogue import rogue, roomy_grpc
from tests.deploy.tasks import counting_strategy


def test_deployed_run_equals_the_simulated_one(tmp_path: Path, keys: KeySet) -> None:
    config = deploy_config(tmp_path, "name=deployed")
    files = client_files(config, tmp_path / "data")
    central = build_federation(config.data, config.seed).central_test
    np.savez(tmp_path / "central.npz", x=central.x, y=central.y)  # the server's own held-out data
    server = start_server(config, keys, test_data=tmp_path / "central.npz")
    clients = [start_client(server.port, keys.client_keys[i], files[i], tmp_path / "state") for i in range(4)]

    result = server.result()

    for client in clients:
        client["thread"].join(30)
        assert client.get("status") == 0, client
    simulated = simulate(config.replace(name="simulated"))
    assert result.params.array_equal(simulated.params)
    assert list(result.history) == list(simulated.history)  # every figure of every round
    with RunStore.open(result.run_path, readonly=True) as store:
        assert store.meta["status"] == "finished"
        assert store.failures() == []


def test_bad_updates_are_rejected_with_reasons_and_the_run_goes_on(tmp_path: Path, keys: KeySet) -> None:
    modes = ["nan", "shape", "dtype", "oversize", "bigchunk", "tampered", "duplicate"]
    config = deploy_config(tmp_path, f"rounds={len(modes) + 1}", "evaluation.interval=100")
    files = client_files(config, tmp_path / "data")
    server = start_server(config, keys)
    honest = [start_client(server.port, keys.client_keys[i], files[i], tmp_path / "state") for i in range(3)]

    lines = asyncio.run(rogue(roomy_grpc(f"127.0.0.1:{server.port}"), keys.client_keys[3], modes))
    result = server.result()

    for client in honest:
        client["thread"].join(30)
        assert client.get("status") == 0
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
    with RunStore.open(result.run_path, readonly=True) as store:
        reasons = {r: reason for r, c, phase, reason in store.failures() if c == 3 and phase == "fit"}
    assert "NaN" in reasons[1] and "shape" in reasons[2] and "dtype" in reasons[3]
    assert 6 not in reasons and reasons[7].startswith("no contact")


def test_over_tls_clients_verify_the_server_and_plaintext_clients_cannot_connect(tmp_path: Path, keys: KeySet) -> None:
    config = deploy_config(tmp_path, "rounds=2", "min_clients=3")
    files = client_files(config, tmp_path / "data")
    server = start_server(config, keys, insecure=False)
    tls = [
        start_client(server.port, keys.client_keys[i], files[i], tmp_path / "s", insecure=False, ca=keys.ca_cert)
        for i in range(3)
    ]
    plaintext = start_client(server.port, keys.client_keys[3], files[3], tmp_path / "s", give_up_after=2.0)

    result = server.result()

    assert result.history.rounds_completed == 2
    assert all(c["thread"].join(30) is None and c.get("status") == 0 for c in tls)
    plaintext["thread"].join(30)
    assert plaintext.get("status") == 1


def test_client_state_stays_on_the_clients_and_moves_on_as_in_simulation(tmp_path: Path, keys: KeySet) -> None:
    config = deploy_config(
        tmp_path, "rounds=6", "fraction=0.5", "min_clients=2", "task=tests.deploy.tasks:CountingTask"
    )
    files = client_files(config, tmp_path / "data")
    server = start_server(config, keys, strategy=counting_strategy())
    clients = [start_client(server.port, keys.client_keys[i], files[i], tmp_path / "state") for i in range(4)]

    result = server.result()

    for client in clients:
        client["thread"].join(30)
    simulated = simulate(config.replace(name="simulated"), strategy=counting_strategy())
    assert result.params.array_equal(simulated.params)
    with RunStore.open(result.run_path, readonly=True) as server_store, RunStore.open(simulated.run_path) as sim:
        assert server_store.clients_with_state == 0  # the server never held a client's state
        expected = sim.client_states(range(4))
        last_used = {c.client_id: r for r, c in server_store.client_records(phase="fit")}
    for client_id in range(4):
        (path,) = (tmp_path / "state").glob(f"*-client{client_id}.npz")
        # what the client would train with next: its last aggregated round's state
        kept = ClientStateFile(path).state_for(config.rounds + 1, aggregated_round=last_used[client_id])
        assert kept["count"]["n"].tolist() == expected[client_id]["count"]["n"].tolist()


def test_rounds_with_fewer_updates_than_the_minimum_leave_the_model_and_the_run_finishes(
    tmp_path: Path, keys: KeySet
) -> None:
    config = deploy_config(tmp_path, "rounds=3", "min_clients=3", "evaluation.interval=100")
    files = client_files(config, tmp_path / "data")
    server = start_server(config, keys)
    honest = [start_client(server.port, keys.client_keys[i], files[i], tmp_path / "state") for i in range(2)]
    np.savez(tmp_path / "wrong.npz", x=np.ones((5, 3), np.float32), y=np.zeros(5))
    unfit = start_client(server.port, keys.client_keys[2], tmp_path / "wrong.npz", tmp_path / "state")

    asyncio.run(
        rogue(roomy_grpc(f"127.0.0.1:{server.port}"), keys.client_keys[3], ["duplicate"])
    )  # one round, then gone
    result = server.result()

    unfit["thread"].join(30)
    assert "the run's model expects (64,)" in str(unfit.get("error"))  # one clear error, no retries
    assert [r.aggregated for r in result.history] == [True, False, False]
    assert all(c["thread"].join(30) is None and c.get("status") == 0 for c in honest)
    with RunStore.open(result.run_path, readonly=True) as store:
        assert store.params(3).array_equal(store.params(1))


def test_a_silent_client_is_dropped_and_takes_part_again_once_it_rejoins(
    tmp_path: Path, keys: KeySet, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SHEAF_TEST_FIT_SECONDS", "0.4")  # rounds long enough to come back in
    config = deploy_config(tmp_path, "rounds=10", "min_clients=2", "heartbeat_timeout=1", "evaluation.interval=100")
    files = client_files(config, tmp_path / "data")
    server = start_server(config, keys)
    honest = [start_client(server.port, keys.client_keys[i], files[i], tmp_path / "state") for i in range(2)]

    lines = asyncio.run(
        rogue(roomy_grpc(f"127.0.0.1:{server.port}"), keys.client_keys[3], ["honest", "pause", "honest"])
    )
    result = server.result()

    assert all(c["thread"].join(30) is None and c.get("status") == 0 for c in honest)
    assert lines[0].startswith("honest ACCEPTED round=1") and lines[1] == "pause rejoined"
    back = int(lines[2].split("round=")[1].split()[0])
    assert lines[2].startswith("honest ACCEPTED") and back > 2
    with RunStore.open(result.run_path, readonly=True) as store:
        dropped = sorted(r for r, c, phase, reason in store.failures() if c == 3 and reason.startswith("no contact"))
        used = sorted(r for r, rec in store.client_records(phase="fit") if rec.client_id == 3)
    assert [r for r in dropped if r <= back] == list(range(2, back))  # gone while silent, then back in
    assert used[:2] == [1, back]


def test_malformed_requests_with_valid_signatures_are_refused_and_the_server_keeps_serving(
    tmp_path: Path, keys: KeySet
) -> None:
    import grpc

    from sheaf.deploy.auth import BodyDigest, load_identity
    from sheaf.deploy.transport import METHODS

    config = deploy_config(tmp_path, "rounds=1", "min_clients=1", "clients=1", "evaluation.federated=false")
    files = client_files(config, tmp_path / "data")
    server = start_server(config, keys)
    identity = load_identity(keys.client_keys[1])
    garbage = [b"\xff\xff\xff", b"\x0a\x05abc", bytes(range(256)), b"\x08" * 50]

    async def send() -> list[str]:
        codes = []
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            await channel.channel_ready()
            for method in ("Join", "Heartbeat", "PullTask"):
                for body in garbage:
                    metadata = identity.sign(METHODS[method], BodyDigest().update(body).digest())
                    try:
                        if method == "PullTask":
                            async for _ in channel.unary_stream(METHODS[method])(body, metadata=metadata):
                                pass
                        else:
                            await channel.unary_unary(METHODS[method])(body, metadata=metadata, timeout=10)
                        codes.append("OK")
                    except grpc.aio.AioRpcError as exc:
                        codes.append(exc.code().name)
            for body in garbage:  # a result stream whose header is nonsense
                metadata = identity.sign(METHODS["PushResult"], BodyDigest().update(body).digest())
                reply = await channel.stream_unary(METHODS["PushResult"])(iter([body, body]), metadata=metadata)
                codes.append(f"push:{reply[:2].hex()}")
        return codes

    codes = asyncio.run(send())
    client = start_client(server.port, keys.client_keys[0], files[0], tmp_path / "state")
    result = server.result()

    assert all(code in ("INVALID_ARGUMENT", "FAILED_PRECONDITION") for code in codes[:12]), codes
    assert all(code == "push:0804" for code in codes[12:]), codes  # PushReply(status=REJECTED)
    assert result.history.rounds_completed == 1 and client["thread"].join(30) is None
