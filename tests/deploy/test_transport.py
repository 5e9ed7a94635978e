"""The transport seam: the in-process transport answers every call as gRPC does, and its
hooks disturb the link the way a network would.

The conformance tests send the same calls to the same service over a real gRPC server on
loopback and over the in-process transport, and require the same outcome for each — the
same reply bytes, or the same status code and details.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from concurrent.futures import Future
from typing import Any

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from sheaf.core.config import ServerConfig
from sheaf.core.errors import SheafError
from sheaf.core.params import Params
from sheaf.deploy._proto import federation_pb2 as pb
from sheaf.deploy.auth import AuthorizedClient, BodyDigest, ClientIdentity, RequestVerifier
from sheaf.deploy.chunks import MAX_MESSAGE_BYTES
from sheaf.deploy.coordinator import Coordinator
from sheaf.deploy.inprocess import InProcessTransport
from sheaf.deploy.inprocess_channel import InProcessChannel
from sheaf.deploy.rpc import CallContext, Connector, Handlers, RpcError, Service, StatusCode
from sheaf.deploy.service import FederationService, ServiceSettings
from sheaf.deploy.transport import METHODS, GrpcServerTransport, client_channel
from sheaf.deploy.wire import PROTOCOL, encode_result
from sheaf.deploy.work import Slot, Work
from tests.deploy.conftest import wait_for
from tests.deploy.rogue import roomy_grpc, roomy_in_process


class Probe:
    """A service with a handler of each shape that ends in each way a handler can."""

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        pass

    def handlers(self) -> Handlers:
        async def boom(request: bytes, context: CallContext) -> bytes:
            raise ValueError(f"boom {request!r}")

        async def count(request: bytes, context: CallContext) -> AsyncIterator[bytes]:
            for i in range(int(request)):
                yield b"%d" % i
            sent = {key: value for key, value in context.metadata() if key in ("a", "b")}  # gRPC adds its own
            await context.abort(StatusCode.DATA_LOSS, f"cut after {int(request)}, metadata {sent}")

        async def total(requests: AsyncIterator[bytes], context: CallContext) -> bytes:
            return b"%d" % sum([len(message) async for message in requests])

        return Handlers({"/probe.P/Boom": boom}, {"/probe.P/Count": count}, {"/probe.P/Total": total})


@contextlib.contextmanager
def served(service: Service, kind: str) -> Iterator[tuple[Connector, Connector, Callable[[Any], Any]]]:
    """``service`` over real gRPC or in-process: (connect, connect with roomy sends, run a coroutine)."""
    if kind == "grpc":
        server = GrpcServerTransport("127.0.0.1:0", None)
        target = server.start(service).address
        try:
            yield (lambda: client_channel(target, ca=None, insecure=True)), roomy_grpc(target), asyncio.run
        finally:
            server.stop()
    else:
        with InProcessTransport() as transport:
            transport.start(service)
            yield transport.connect, roomy_in_process(transport), transport.run


async def _outcome(call: Any) -> str:
    try:
        result = await call
    except RpcError as exc:
        return f"{exc.code.name}: {exc.details}"
    return f"ok {result!r}"


async def _stream(call: AsyncIterator[bytes]) -> str:
    got = []
    try:
        async for message in call:
            got.append(message.hex())
    except RpcError as exc:
        return f"{got} then {exc.code.name}: {exc.details}"
    return f"{got}"


def test_the_probe_service_ends_its_calls_alike_over_grpc_and_in_process() -> None:
    async def exchange(connect: Connector) -> list[str]:
        channel = connect()
        metadata = (("a", "1"), ("b", "2"))
        outcomes = [
            await _outcome(channel.unary_unary("/probe.P/Boom", b"x", metadata=metadata)),
            await _stream(channel.unary_stream("/probe.P/Count", b"3", metadata=metadata)),
            await _outcome(channel.stream_unary("/probe.P/Total", [b"ab", b"", b"cde"], metadata=metadata)),
            await _outcome(channel.unary_unary("/probe.P/Missing", b"", metadata=())),
        ]
        await channel.close()
        return outcomes

    seen = {}
    for kind in ("grpc", "in-process"):
        with served(Probe(), kind) as (connect, _, run):
            seen[kind] = run(exchange(connect))

    assert seen["in-process"] == seen["grpc"]
    assert seen["grpc"] == [
        "UNKNOWN: Unexpected <class 'ValueError'>: boom b'x'",
        "['30', '31', '32'] then DATA_LOSS: cut after 3, metadata {'a': '1', 'b': '2'}",
        "ok b'5'",
        "UNIMPLEMENTED: Method not found!",
    ]


def _federation(identity: ClientIdentity) -> tuple[FederationService, Coordinator]:
    client = AuthorizedClient(0, "a", identity.public_key)
    coordinator = Coordinator({0: "a"}, ServerConfig(round_timeout=60))
    settings = ServiceSettings("run", pb.RunDescription(), 1.0, max_update_bytes=1 << 12)
    return FederationService(coordinator, RequestVerifier({identity.key_id: client}), settings), coordinator


def test_the_federation_service_answers_alike_over_grpc_and_in_process() -> None:
    identity, stranger = ClientIdentity(Ed25519PrivateKey.generate()), ClientIdentity(Ed25519PrivateKey.generate())
    like = Params({"w": np.zeros(3, np.float32)})
    result = encode_result("r1", "u1", "fit", 1, num_examples=3, delta=Params({"w": np.ones(3, np.float32)}))

    def signed(method: str, body: bytes, who: ClientIdentity = identity) -> tuple[tuple[str, str], ...]:
        return who.sign(METHODS[method], BodyDigest().update(body).digest())

    async def exchange(connect: Connector, roomy: Connector, coordinator: Coordinator) -> list[str]:
        channel, big = connect(), roomy()
        join = pb.JoinRequest(protocol=PROTOCOL).SerializeToString()
        once = signed("Join", join)
        heartbeat = pb.HeartbeatRequest(run_id="run").SerializeToString()
        oversized = b"\0" * (MAX_MESSAGE_BYTES + 1)
        pull = pb.PullRequest(run_id="run", wait_seconds=5).SerializeToString()
        outcomes = [
            await _outcome(channel.unary_unary(METHODS["Join"], join, metadata=once)),
            await _outcome(channel.unary_unary(METHODS["Join"], join, metadata=once)),  # a replay
            await _outcome(channel.unary_unary(METHODS["Join"], join, metadata=signed("Join", join, stranger))),
            await _outcome(channel.unary_unary(METHODS["Join"], join, metadata=())),
            await _outcome(channel.unary_unary(METHODS["Join"], b"\xff\xff", metadata=signed("Join", b"\xff\xff"))),
            await _outcome(
                channel.unary_unary(METHODS["Heartbeat"], heartbeat, metadata=signed("Heartbeat", heartbeat))
            ),
            await _outcome(channel.unary_unary(METHODS["Heartbeat"], oversized, metadata=())),
            await _outcome(big.unary_unary(METHODS["Heartbeat"], oversized, metadata=())),
            await _stream(
                channel.unary_stream(METHODS["PullTask"], pull, metadata=signed("PullTask", pull), timeout=0.3)
            ),
        ]
        coordinator.post(Work("fit", 1, {0: Slot(0, "r1", b"header")}, [b"chunk-1", b"chunk-2"], like=like))
        outcomes.append(
            await _stream(channel.unary_stream(METHODS["PullTask"], pull, metadata=signed("PullTask", pull)))
        )
        for metadata in (signed("PushResult", result[0]), signed("PushResult", result[0]), signed("Join", result[0])):
            outcomes.append(await _outcome(channel.stream_unary(METHODS["PushResult"], result, metadata=metadata)))
        await channel.close()
        await big.close()
        return outcomes

    seen = {}
    for kind in ("grpc", "in-process"):
        service, coordinator = _federation(identity)
        with served(service, kind) as (connect, roomy, run):
            seen[kind] = run(exchange(connect, roomy, coordinator))
        service.close()  # as run_server does: its judging thread ends with it

    assert seen["in-process"] == seen["grpc"]
    outcomes = seen["grpc"]
    assert outcomes[0].startswith("ok ") and outcomes[1].startswith("UNAUTHENTICATED: replayed request")
    assert outcomes[2].startswith("UNAUTHENTICATED: unknown client key")
    assert outcomes[3].startswith("UNAUTHENTICATED: request lacks the sheaf-key metadata")
    assert outcomes[4].startswith("INVALID_ARGUMENT: malformed JoinRequest")
    assert outcomes[5] == f"ok {pb.HeartbeatReply(finished=False).SerializeToString()!r}"
    size = f"({MAX_MESSAGE_BYTES + 1} vs. {MAX_MESSAGE_BYTES})"
    assert outcomes[6] == f"RESOURCE_EXHAUSTED: CLIENT: Sent message larger than max {size}"
    assert outcomes[7] == f"RESOURCE_EXHAUSTED: SERVER: Received message larger than max {size}"
    assert outcomes[8] == "[] then DEADLINE_EXCEEDED: Deadline Exceeded"
    assert outcomes[9] == f"{[b'header'.hex(), b'chunk-1'.hex(), b'chunk-2'.hex()]}"
    accepted = pb.PushReply(status=pb.ACCEPTED).SerializeToString()
    duplicate = pb.PushReply(status=pb.DUPLICATE, detail="this update was delivered before; ignored")
    assert outcomes[10] == f"ok {accepted!r}"
    assert outcomes[11] == f"ok {duplicate.SerializeToString()!r}"
    assert outcomes[12].startswith("UNAUTHENTICATED: bad signature on a PushResult request")


# The hooks -------------------------------------------------------------------------------------
@pytest.fixture
def federation(transport: InProcessTransport) -> tuple[ClientIdentity, Coordinator]:
    identity = ClientIdentity(Ed25519PrivateKey.generate())
    service, coordinator = _federation(identity)
    transport.start(service)
    return identity, coordinator


def _heartbeat(channel: InProcessChannel, identity: ClientIdentity, timeout: float | None = None) -> Awaitable[str]:
    body = pb.HeartbeatRequest(run_id="run").SerializeToString()
    metadata = identity.sign(METHODS["Heartbeat"], BodyDigest().update(body).digest())
    return _outcome(channel.unary_unary(METHODS["Heartbeat"], body, metadata=metadata, timeout=timeout))


#: A pull that waits up to 20 s for work.
LONG_POLL = pb.PullRequest(run_id="run", wait_seconds=20).SerializeToString()


def _long_poll(transport: InProcessTransport, channel: InProcessChannel, identity: ClientIdentity) -> Future[str]:
    metadata = identity.sign(METHODS["PullTask"], BodyDigest().update(LONG_POLL).digest())
    return transport.submit(_stream(channel.unary_stream(METHODS["PullTask"], LONG_POLL, metadata=metadata)))


def test_a_failure_before_delivery_never_reaches_the_server_and_one_after_it_loses_only_the_reply(
    transport: InProcessTransport, federation: tuple[ClientIdentity, Coordinator]
) -> None:
    identity, coordinator = federation
    channel = transport.connect()

    transport.fail_next(StatusCode.UNAVAILABLE, "link down")
    before = transport.run(_heartbeat(channel, identity))
    heard_before = coordinator.connected()
    transport.fail_next(StatusCode.UNAVAILABLE, "reply lost", method="Heartbeat", delivered=True)
    after = transport.run(_heartbeat(channel, identity))

    assert before == "UNAVAILABLE: link down" and heard_before == []
    assert after == "UNAVAILABLE: reply lost" and coordinator.connected() == [0]


def test_dropping_the_connections_breaks_the_calls_in_progress(
    transport: InProcessTransport, federation: tuple[ClientIdentity, Coordinator]
) -> None:
    identity, coordinator = federation
    waiting = _long_poll(transport, transport.connect(), identity)
    wait_for(coordinator.connected, 10, "the long poll to reach the server")

    dropped = transport.drop()

    assert dropped == 1 and waiting.result(10) == "[] then UNAVAILABLE: connection dropped"


def test_latency_counts_against_the_deadline(
    transport: InProcessTransport, federation: tuple[ClientIdentity, Coordinator]
) -> None:
    identity, _ = federation
    transport.latency = 0.2
    channel = transport.connect()

    late = transport.run(_heartbeat(channel, identity, timeout=0.1))
    in_time = transport.run(_heartbeat(channel, identity, timeout=5))

    assert late == "DEADLINE_EXCEEDED: Deadline Exceeded"
    assert in_time.startswith("ok ")


def test_closing_a_channel_or_stopping_the_server_ends_its_calls(
    transport: InProcessTransport, federation: tuple[ClientIdentity, Coordinator]
) -> None:
    identity, coordinator = federation
    closing, staying = transport.connect(), transport.connect()
    cut = _long_poll(transport, closing, identity)
    stopped = _long_poll(transport, staying, identity)
    wait_for(lambda: coordinator.traffic["received"] >= 2 * len(LONG_POLL), 10, "both long polls to reach the server")

    transport.run(closing.close())
    after_close = transport.run(_heartbeat(closing, identity))
    transport.stop()
    after_stop = transport.run(_heartbeat(staying, identity))

    assert cut.result(10) == "[] then CANCELLED: the channel was closed"
    assert after_close == "CANCELLED: the channel is closed"
    assert stopped.result(10) == "[] then UNAVAILABLE: the server stopped"
    assert after_stop == "UNAVAILABLE: no server is serving in this process"


def test_linger_ends_once_every_client_has_closed_its_connection(transport: InProcessTransport) -> None:
    channel = transport.connect()
    transport.submit(_close_later(channel))

    transport.linger(60)  # returns when the channel is closed, long before a minute

    assert channel.closed


async def _close_later(channel: InProcessChannel) -> None:
    await asyncio.sleep(0.05)
    await channel.close()


def test_a_channel_is_used_on_its_transports_loop_only(transport: InProcessTransport) -> None:
    channel = transport.connect()

    with pytest.raises(SheafError, match="transport's event loop only"):
        asyncio.run(channel.unary_unary(METHODS["Heartbeat"], b"", metadata=()))
