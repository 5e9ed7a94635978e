"""The wire format: round trips, every limit, and malformed-message fuzzing of the decoders."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sheaf.core.config import ServerConfig, TrainConfig
from sheaf.core.params import Params
from sheaf.deploy._proto import federation_pb2 as pb
from sheaf.deploy.auth import AuthorizedClient, ClientIdentity, RequestVerifier
from sheaf.deploy.chunks import CHUNK_BYTES, TensorAssembler, WireError, encode_tensors, tensor_digest
from sheaf.deploy.coordinator import Coordinator
from sheaf.deploy.service import FederationService, ServiceSettings
from sheaf.deploy.wire import (
    ResultReader,
    TaskReader,
    encode_result,
    encode_task_header,
    idle_message,
    task_chunk,
)
from sheaf.deploy.work import Slot, Work
from tests.helpers import params, params_like, params_structures


def _read_result(messages: list[bytes], limit: int = 1 << 30) -> Any:
    reader = ResultReader(limit)
    for message in messages:
        reader.feed(message)
    return reader.finish()


def _read_task(messages: list[bytes], limit: int = 1 << 30) -> Any:
    reader = TaskReader(limit)
    for message in messages:
        reader.feed(message)
    return reader.finish()


@given(params(), st.integers(1, 64))
def test_any_params_survive_the_chunks_bit_for_bit(model: Params, chunk: int) -> None:
    sent = encode_tensors({"": model}, chunk_bytes=chunk)
    assert all(0 < len(c) <= chunk for c in sent.chunks)
    receiver = TensorAssembler(sent.specs, sent.total_bytes, sent.digest, limit=sent.total_bytes, what="test")
    for data in sent.chunks:
        receiver.add(data)
    back = receiver.finish().get("", Params({}))
    assert back.array_equal(model)


@given(st.data())
def test_a_task_carries_params_settings_options_and_payload(data: st.DataObject) -> None:
    structure = data.draw(params_structures())
    model = data.draw(params_like(structure))
    payload = {"control": data.draw(params())}
    options = data.draw(
        st.dictionaries(
            st.text(min_size=1, max_size=5),
            st.one_of(st.booleans(), st.integers(-5, 5), st.floats(allow_nan=False), st.text(max_size=4)),
            max_size=3,
        )
    )
    train = TrainConfig(epochs=3, lr=0.25, optimizer="adam")
    tensors = encode_tensors({"": model, **payload})
    header = encode_task_header("r2-fit-c7", "fit", 2, 7, tensors, train=train, options=options, aggregated_round=1)
    task = _read_task([header, *(task_chunk(c) for c in tensors.chunks)])
    assert (task.task_id, task.kind, task.round, task.client_id, task.aggregated_round) == ("r2-fit-c7", "fit", 2, 7, 1)
    assert task.params.array_equal(model)
    assert task.payload["control"].array_equal(payload["control"])
    assert task.train == train
    assert dict(task.options) == options


def test_a_fit_result_carries_delta_extras_and_metrics() -> None:
    delta = Params({"w": np.arange(6, dtype=np.float32).reshape(2, 3)})
    extras = {"c": Params({"v": np.ones(4)})}
    result = _read_result(
        encode_result("t", "u", "fit", 3, num_examples=12, metrics={"loss": 0.5}, delta=delta, extras=extras)
    )
    assert result.delta.array_equal(delta) and result.extras["c"].array_equal(extras["c"])
    assert (result.num_examples, dict(result.metrics), result.failure) == (12, {"loss": 0.5}, "")


def test_an_evaluation_or_a_failure_carries_no_tensors() -> None:
    evaluation = _read_result(encode_result("t", "u", "evaluate", 1, num_examples=4, loss=0.3, metrics={"accuracy": 1}))
    assert (evaluation.loss, evaluation.delta, dict(evaluation.metrics)) == (0.3, None, {"accuracy": 1.0})
    failure = _read_result(encode_result("t", "u", "fit", 1, failure="fit failed: boom"))
    assert failure.failure == "fit failed: boom" and failure.delta is None


def test_idle_is_the_whole_answer() -> None:
    reader = TaskReader(100)
    reader.feed(idle_message(1.5, finished=True))
    assert reader.finish() is None and reader.idle is not None and reader.idle.finished
    with pytest.raises(WireError, match="after an idle"):
        reader.feed(idle_message(0))


def _result_header(**fields: Any) -> bytes:
    empty = tensor_digest().hexdigest()
    base: dict[str, Any] = {"task_id": "t", "update_id": "u", "kind": pb.FIT, "round": 1, "tensors_digest": empty}
    return pb.ResultMessage(result=pb.Result(**{**base, **fields})).SerializeToString()


@pytest.mark.parametrize(
    ("header", "match"),
    [
        ({"tensors": [pb.TensorSpec(name="w", dtype="object", shape=[1])], "total_bytes": 8}, "dtype 'object'"),
        ({"tensors": [pb.TensorSpec(name="w", dtype="float32", shape=[-1])], "total_bytes": 0}, "invalid shape"),
        ({"tensors": [pb.TensorSpec(name="w", dtype="float32", shape=[2])], "total_bytes": 9}, "declares 9 bytes"),
        (
            {"tensors": [pb.TensorSpec(name="w", dtype="float64", shape=[1 << 40])], "total_bytes": 8 << 40},
            "most accepted",
        ),
        ({"tensors": [pb.TensorSpec(name="w", dtype="int8", shape=[1])] * 2, "total_bytes": 2}, "repeated"),
        ({"tensors": [pb.TensorSpec(name="", dtype="int8", shape=[1])], "total_bytes": 1}, "empty"),
        ({"task_id": ""}, "task id"),
        ({"update_id": "x" * 500}, "update id"),
        ({"kind": 9}, "unknown kind"),
        ({"num_examples": -1}, "claims -1 examples"),
        ({"num_examples": 10**12}, "claims 1000000000000 examples; a result may claim 0 to 536870911"),
        (
            {"metrics": [pb.NamedScalar(name=f"m{i}", value=pb.Scalar(float_value=0)) for i in range(40_000)]},
            "carries 40000 metrics, more than the 256 accepted",
        ),
        ({"metrics": [pb.NamedScalar(name="m" * 101, value=pb.Scalar(float_value=0))]}, "over 100 characters"),
        ({"metrics": [pb.NamedScalar(name="acc", value=pb.Scalar(float_value=float("nan")))]}, "'acc' is NaN"),
        ({"metrics": [pb.NamedScalar(name="acc", value=pb.Scalar(string_value="x"))]}, "must be a number"),
    ],
)
def test_a_bad_result_header_is_refused_before_any_tensor_bytes(header: dict[str, Any], match: str) -> None:
    reader = ResultReader(limit=1 << 20)
    with pytest.raises(WireError, match=match):
        reader.feed(_result_header(**header))


def test_tensor_bytes_must_be_exactly_what_the_header_declares() -> None:
    delta = Params({"w": np.ones(300, np.float32)})
    messages = encode_result("t", "u", "fit", 1, delta=delta, chunk_bytes=512)
    with pytest.raises(WireError, match="ended after 512 of 1200"):
        _read_result(messages[:2])
    with pytest.raises(WireError, match="more tensor bytes"):
        _read_result([*messages, messages[-1]])
    tampered = pb.ResultMessage.FromString(messages[1])
    tampered.chunk.data = b"\xff" + tampered.chunk.data[1:]
    with pytest.raises(WireError, match="do not match the digest"):
        _read_result([messages[0], tampered.SerializeToString(), *messages[2:]])
    big = pb.ResultMessage(chunk=pb.Chunk(data=b"\0" * (CHUNK_BYTES + 1))).SerializeToString()
    with pytest.raises(WireError, match="chunk size"):
        _read_result([messages[0], big])


def test_messages_must_come_in_order() -> None:
    messages = encode_result("t", "u", "fit", 1, delta=Params({"w": np.ones(3)}))
    with pytest.raises(WireError, match="out of order"):
        _read_result([messages[1]])
    with pytest.raises(WireError, match="out of order"):
        _read_result([messages[0], messages[0]])
    with pytest.raises(WireError, match="before its header"):
        _read_result([])


def test_unusable_contents_are_refused() -> None:
    ints = encode_tensors({"": Params({"w": np.ones(2)})})
    ints.specs[0].dtype = "int64"
    header = pb.ResultMessage(result=pb.Result(task_id="t", update_id="u", kind=pb.FIT, round=1, tensors=ints.specs,
                                               total_bytes=16, tensors_digest=ints.digest))  # fmt: skip
    chunk = pb.ResultMessage(chunk=pb.Chunk(data=ints.chunks[0])).SerializeToString()
    with pytest.raises(WireError, match="floating-point"):
        _read_result([header.SerializeToString(), chunk])
    with pytest.raises(WireError, match="must be a number"):
        _read_result([_result_header(metrics=[pb.NamedScalar(name="m", value=pb.Scalar(string_value="x"))])])
    with pytest.raises(WireError, match="carries no tensors"):
        _read_result(encode_result("t", "u", "evaluate", 1, delta=Params({"w": np.ones(1)})))
    with pytest.raises(WireError, match="must carry the delta"):
        _read_result([_result_header()])
    bad_train = pb.TaskMessage(
        task=pb.Task(
            task_id="t",
            kind=pb.FIT,
            train=[pb.NamedScalar(name="epochs", value=pb.Scalar(int_value=0))],
            tensors_digest=tensor_digest().hexdigest(),
        )
    )
    with pytest.raises(WireError, match="train settings"):
        _read_task([bad_train.SerializeToString()])


# Fuzzing ------------------------------------------------------------------------------------
@settings(max_examples=300)
@given(st.lists(st.binary(max_size=300), max_size=5))
def test_arbitrary_bytes_never_crash_or_hang_the_readers(messages: list[bytes]) -> None:
    started = time.monotonic()
    for reader in (ResultReader(limit=1 << 16), TaskReader(limit=1 << 16)):
        with contextlib.suppress(WireError):
            for message in messages:
                reader.feed(message)
            reader.finish()
    assert time.monotonic() - started < 5


spec_strategy = st.builds(
    pb.TensorSpec,
    group=st.sampled_from(["", "x"]),
    name=st.sampled_from(["", "w", "b"]),
    dtype=st.sampled_from(["float32", "float64", "int8", "object", "<U3", "complex128", ""]),
    shape=st.lists(st.integers(-3, 1 << 62), max_size=4),
)


@settings(max_examples=300)
@given(
    st.lists(spec_strategy, max_size=4),
    st.integers(-10, 1 << 62),
    st.lists(st.binary(max_size=64), max_size=4),
    st.text(max_size=70),
)
def test_structured_nonsense_never_crashes_or_allocates_past_the_limit(
    specs: list[pb.TensorSpec], total: int, chunks: list[bytes], digest: str
) -> None:
    header = pb.Result(task_id="t", update_id="u", kind=pb.FIT, round=1, tensors=specs, total_bytes=total,
                       tensors_digest=digest)  # fmt: skip
    messages = [pb.ResultMessage(result=header).SerializeToString()]
    messages += [pb.ResultMessage(chunk=pb.Chunk(data=c)).SerializeToString() for c in chunks]
    with contextlib.suppress(WireError):
        _read_result(messages, limit=1 << 12)


def _service() -> tuple[FederationService, Coordinator, AuthorizedClient]:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    identity = ClientIdentity(Ed25519PrivateKey.generate())
    client = AuthorizedClient(0, "a", identity.public_key)
    coordinator = Coordinator({0: "a"}, ServerConfig(round_timeout=1))
    like = Params({"w": np.zeros(3, np.float32)})
    coordinator.post(Work("fit", 1, {0: Slot(0, "t", b"")}, [], like=like))
    settings_ = ServiceSettings("run", pb.RunDescription(), 1.0, max_update_bytes=1 << 12)
    return FederationService(coordinator, RequestVerifier({identity.key_id: client}), settings_), coordinator, client


async def _receive(
    service: FederationService, client: AuthorizedClient, first: bytes, stream: AsyncIterator[bytes]
) -> tuple[str, str]:
    with service.streams.claim(client.client_id) as claim:
        return await service._receive(client, first, stream, claim)


@settings(max_examples=150)
@given(st.binary(max_size=200), st.lists(st.binary(max_size=100), max_size=4))
def test_the_servers_result_path_answers_every_malformed_stream_and_keeps_serving(
    first: bytes, rest: list[bytes]
) -> None:
    service, coordinator, client = _service()

    async def stream() -> AsyncIterator[bytes]:
        for message in rest:
            yield message

    status, detail = asyncio.run(_receive(service, client, first, stream()))
    assert status in ("rejected", "stale", "accepted", "duplicate")
    assert isinstance(detail, str)
    good = encode_result("t", "u2", "fit", 1, num_examples=3, delta=Params({"w": np.ones(3, np.float32)}))

    async def good_stream() -> AsyncIterator[bytes]:
        for message in good[1:]:
            yield message

    if coordinator.work is not None and coordinator.work.slots[0].state != "done":
        assert asyncio.run(_receive(service, client, good[0], good_stream())) == ("accepted", "")
