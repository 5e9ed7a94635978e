"""Result streams: allocation as bytes arrive, one per client, a receive deadline, no orphans."""

from __future__ import annotations

import asyncio
import tracemalloc
from collections.abc import AsyncIterator

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from sheaf.core.config import ServerConfig
from sheaf.core.params import Params
from sheaf.deploy._proto import federation_pb2 as pb
from sheaf.deploy.auth import AuthorizedClient, ClientIdentity, RequestVerifier
from sheaf.deploy.chunks import CHUNK_BYTES, TensorAssembler
from sheaf.deploy.coordinator import Coordinator
from sheaf.deploy.service import FederationService, ServiceSettings
from sheaf.deploy.streams import ResultStreams, StreamBusy
from sheaf.deploy.wire import encode_result
from sheaf.deploy.work import Slot, Work

LIKE = Params({"w": np.zeros(3, np.float32)})


def test_a_declared_size_costs_nothing_until_its_bytes_arrive() -> None:
    spec = pb.TensorSpec(group="", name="w", dtype="float32", shape=[256 << 20])  # 1 GiB declared
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        assembler = TensorAssembler([spec], 1 << 30, "", limit=1 << 30, what="result")
        declared = tracemalloc.get_traced_memory()[0] - before
        assembler.add(b"\0" * CHUNK_BYTES)
        one_chunk = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert declared < 1 << 16
    assert CHUNK_BYTES <= one_chunk < 3 * CHUNK_BYTES
    assert assembler.received == CHUNK_BYTES


def _service(receive_timeout: float) -> tuple[FederationService, Coordinator, AuthorizedClient]:
    identity = ClientIdentity(Ed25519PrivateKey.generate())
    client = AuthorizedClient(0, "a", identity.public_key)
    coordinator = Coordinator({0: "a"}, ServerConfig(round_timeout=60))
    coordinator.post(Work("fit", 1, {0: Slot(0, "t", b"")}, [], like=LIKE))
    settings = ServiceSettings("run", "{}", 1.0, max_update_bytes=1 << 12, receive_timeout=receive_timeout)
    service = FederationService(coordinator, RequestVerifier({identity.key_id: client}), settings)
    return service, coordinator, client


def _result() -> list[bytes]:
    return encode_result("t", "u1", "fit", 1, num_examples=3, delta=Params({"w": np.ones(3, np.float32)}))


async def _receive(service: FederationService, client: AuthorizedClient, stream: AsyncIterator[bytes]) -> str:
    first = await anext(stream)
    with service.streams.claim(client.client_id) as claim:
        status, detail = await service._receive(client, first, stream, claim)
    return f"{status}: {detail}"


def test_a_stream_that_stalls_is_given_up_at_the_receive_deadline() -> None:
    service, coordinator, client = _service(receive_timeout=0.05)
    header, *chunks = _result()

    async def stalls() -> AsyncIterator[bytes]:
        yield header
        await asyncio.Event().wait()  # never more
        yield chunks[0]

    outcome = asyncio.run(_receive(service, client, stalls()))

    assert outcome == "rejected: update rejected: result: no message for 0.05 s; the stream is given up"
    assert coordinator.work is not None and coordinator.work.slots[0].state == "done"


def test_a_client_has_one_result_stream_at_a_time() -> None:
    streams = ResultStreams(timeout=1.0)
    with streams.claim(3), pytest.raises(StreamBusy, match="client 3 is already sending a result"):
        with streams.claim(3):
            pass
    with streams.claim(3):  # released when the first ended
        assert streams.open == 1
    assert streams.open == 0


def test_a_stream_for_a_share_settled_meanwhile_is_abandoned_and_answered_stale() -> None:
    service, coordinator, client = _service(receive_timeout=30)
    header, *chunks = _result()

    async def run() -> str:
        service.bind(asyncio.get_running_loop())
        arrived = asyncio.Event()

        async def slow() -> AsyncIterator[bytes]:
            yield header
            arrived.set()
            await asyncio.Event().wait()
            yield chunks[0]

        receiving = asyncio.ensure_future(_receive(service, client, slow()))
        await arrived.wait()
        await asyncio.sleep(0)
        coordinator.settle(0, "t", "other", failure="dropped")  # e.g. its client fell silent
        service._wake()  # what the coordinator's wake-up does on the event loop
        return await asyncio.wait_for(receiving, 5)

    assert asyncio.run(run()) == "stale: task t is already settled (dropped)"
    assert service.streams.open == 0
