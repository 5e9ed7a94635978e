"""A misbehaving client: it holds a valid key but sends bad updates, one kind per round.

It speaks the real protocol through any :class:`~sheaf.deploy.rpc.Channel`: the tests run it
in-process (:func:`roomy_in_process`) and over real gRPC (:func:`roomy_grpc`), both with a
send limit roomy enough that oversized messages actually leave it.

Modes (one fit round each): ``nan`` (a NaN in the delta), ``shape`` (a tensor of the wrong
shape), ``dtype`` (float64 instead of float32), ``oversize`` (declares more bytes than the
server accepts), ``bigchunk`` (one 5 MiB chunk message), ``tampered`` (a header that does
not match its signature), ``duplicate`` (a valid update delivered twice); ``honest`` sends a
valid update and ``pause`` goes silent (no requests at all) until its ``pause`` hook
returns, then joins again. Modes with an argument lie about one thing in an otherwise valid
update: ``weight:N`` claims N examples, ``norm:V`` sends a delta of V everywhere (finite,
e.g. 1e30), ``metrics:a=1,b=2`` reports those metrics, ``metric_count:N`` reports N
distinct metrics. It answers every evaluation with a failure report (or, with
``evaluation="claim:N"``, with accuracy 0 on N examples) and returns one line per push:
``<mode> <status> round=<r> <detail>``.
"""

from __future__ import annotations

import asyncio
import functools
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import numpy as np

from sheaf.core.params import Params
from sheaf.deploy._proto import federation_pb2 as pb
from sheaf.deploy.auth import BodyDigest, load_identity
from sheaf.deploy.client import _Rpc
from sheaf.deploy.inprocess import InProcessTransport
from sheaf.deploy.rpc import Connector, RpcError, StatusCode
from sheaf.deploy.transport import METHODS, client_channel
from sheaf.deploy.wire import ReceivedTask, encode_result

#: Big enough for the ``bigchunk`` message and more; the server's own limits still apply.
ROOMY = 64 << 20


def roomy_grpc(target: str, ca: Path | None = None) -> Connector:
    """Connections over gRPC (plaintext unless ``ca``) that send messages up to :data:`ROOMY`."""
    options = [("grpc.max_send_message_length", ROOMY)]
    return functools.partial(client_channel, target, ca=ca, insecure=ca is None, options=options)


def roomy_in_process(transport: InProcessTransport) -> Connector:
    """In-process connections that send messages up to :data:`ROOMY`."""
    return functools.partial(transport.connect, max_send_bytes=ROOMY)


def _lying_result(mode: str, task: ReceivedTask, good: Params) -> list[bytes]:
    kind, _, argument = mode.partition(":")
    update_id = uuid.uuid4().hex
    if kind == "weight":
        return encode_result(task.task_id, update_id, "fit", task.round, num_examples=int(argument), delta=good)
    if kind == "norm":
        huge = task.params.map(lambda a: np.full_like(a, float(argument)))
        return encode_result(task.task_id, update_id, "fit", task.round, num_examples=5, delta=huge)
    if kind == "metrics":
        metrics = {name: float(value) for name, value in (pair.split("=") for pair in argument.split(","))}
        return encode_result(task.task_id, update_id, "fit", task.round, num_examples=5, delta=good, metrics=metrics)
    if kind == "metric_count":
        metrics = {f"m{i}": 0.0 for i in range(int(argument))}
        return encode_result(task.task_id, update_id, "fit", task.round, num_examples=5, delta=good, metrics=metrics)
    raise ValueError(f"unknown mode {mode}")


def _evaluation(task: ReceivedTask, evaluation: str) -> list[bytes]:
    update_id = uuid.uuid4().hex
    if evaluation.startswith("claim:"):
        examples = int(evaluation.split(":")[1])
        metrics = {"accuracy": 0.0}
        return encode_result(
            task.task_id, update_id, "evaluate", task.round, num_examples=examples, metrics=metrics, loss=9.0
        )
    return encode_result(task.task_id, update_id, "evaluate", task.round, failure="no")


def _bad_result(mode: str, task: ReceivedTask, max_bytes: int) -> list[bytes]:
    update_id = uuid.uuid4().hex
    good = task.params.map(lambda a: a * 0 + 0.01)
    if ":" in mode:
        return _lying_result(mode, task, good)
    if mode == "nan":
        w = good["w"].copy()
        w.flat[0] = np.nan
        return encode_result(task.task_id, update_id, "fit", task.round, num_examples=5, delta=Params({**good, "w": w}))
    if mode == "shape":
        delta = Params({**good, "w": np.zeros((3, 3), np.float32)})
        return encode_result(task.task_id, update_id, "fit", task.round, num_examples=5, delta=delta)
    if mode == "dtype":
        return encode_result(task.task_id, update_id, "fit", task.round, num_examples=5, delta=good.astype(np.float64))
    if mode == "oversize":
        messages = encode_result(task.task_id, update_id, "fit", task.round, num_examples=5, delta=good)
        header = pb.ResultMessage.FromString(messages[0])
        elements = max_bytes // 4 + 1
        header.result.tensors.append(pb.TensorSpec(group="huge", name="x", dtype="float32", shape=[elements]))
        header.result.total_bytes += elements * 4
        return [header.SerializeToString(), *messages[1:]]
    if mode == "bigchunk":
        messages = encode_result(task.task_id, update_id, "fit", task.round, num_examples=5, delta=good)
        return [messages[0], pb.ResultMessage(chunk=pb.Chunk(data=b"\0" * (5 << 20))).SerializeToString()]
    if mode in ("tampered", "duplicate", "honest"):
        return encode_result(task.task_id, update_id, "fit", task.round, num_examples=5, delta=good)
    raise ValueError(f"unknown mode {mode}")


async def _join(rpc: _Rpc) -> pb.JoinReply:
    for _ in range(300):  # the server may still be starting
        try:
            return await rpc.join()
        except RpcError as exc:
            if exc.code != StatusCode.UNAVAILABLE:
                raise
            await asyncio.sleep(0.1)
    raise TimeoutError("the server did not come up")


async def _a_while() -> None:
    await asyncio.sleep(3.0)


async def rogue(
    connect: Connector,
    key: Path,
    modes: list[str],
    *,
    pause: Callable[[], Awaitable[None]] = _a_while,
    on_line: Callable[[str], None] = lambda line: None,
    evaluation: str = "fail",
    until_finished: bool = False,
) -> list[str]:
    """Join with a valid key and send one bad update per fit round; return one line per push.

    Besides the bad modes: ``honest`` answers one fit with a valid update; ``pause`` closes
    the connection, awaits ``pause()`` without a request, then joins again. ``on_line``
    sees each line as it is written. ``evaluation`` says how it answers evaluations
    (``fail``, or ``claim:N``); with ``until_finished`` it goes on answering evaluations
    once its modes are used up, until the run is over.
    """
    identity = load_identity(key)
    channel = connect()
    rpc = _Rpc(channel, identity)
    lines: list[str] = []

    def say(line: str) -> None:
        lines.append(line)
        on_line(line)

    try:
        join = await _join(rpc)
        remaining = list(modes)
        while remaining or until_finished:
            if remaining and remaining[0] == "pause":
                remaining.pop(0)
                await channel.close()
                await pause()
                channel = connect()
                rpc = _Rpc(channel, identity)
                join = await _join(rpc)
                say("pause rejoined")
                continue
            reader = await rpc.pull(join.run_id, 1 << 30)
            if reader.idle is not None:
                if reader.idle.finished:
                    break
                continue
            task = reader.finish()
            assert task is not None
            if task.kind == "evaluate":
                await rpc.push(_evaluation(task, evaluation))
                continue
            if not remaining:  # nothing left to send: say so, as a client whose training failed
                await rpc.push(encode_result(task.task_id, uuid.uuid4().hex, "fit", task.round, failure="done"))
                continue
            mode = remaining.pop(0)
            messages = _bad_result(mode, task, join.max_update_bytes)
            for _ in range(2 if mode == "duplicate" else 1):
                metadata = identity.sign(METHODS["PushResult"], BodyDigest().update(messages[0]).digest())
                if mode == "tampered":
                    forged = pb.ResultMessage.FromString(messages[0])
                    forged.result.num_examples = 10_000
                    messages = [forged.SerializeToString(), *messages[1:]]
                try:
                    reply = await rpc.channel.stream_unary(METHODS["PushResult"], messages, metadata=metadata)
                    answer = pb.PushReply.FromString(reply)
                    say(f"{mode} {pb.PushStatus.Name(answer.status)} round={task.round} {answer.detail}")
                except RpcError as exc:
                    say(f"{mode} {exc.code.name} round={task.round} {exc.details}")
    finally:
        await channel.close()
    return lines


async def vanish_with_a_task(connect: Connector, key: Path) -> ReceivedTask:
    """Join, pull until a task comes, then close the connection and send nothing more: a
    client killed while it trains, as its server sees it. Returns the task it took."""
    identity = load_identity(key)
    channel = connect()
    try:
        rpc = _Rpc(channel, identity)
        join = await _join(rpc)
        while True:
            reader = await rpc.pull(join.run_id, 1 << 30)
            if reader.idle is None:
                task = reader.finish()
                assert task is not None
                return task
            if reader.idle.finished:
                raise AssertionError("the run finished before this client got a task")
    finally:
        await channel.close()


async def stalled_pushes(
    connect: Connector, key: Path, count: int, *, on_line: Callable[[str], None] = lambda line: None
) -> list[str]:
    """Pull a fit task, then open ``count`` result streams for it at once, each a signed header
    declaring as many bytes as the server accepts, and nothing after it: until the server ends
    the stream. Returns one line per stream, ``<STATUS or CODE> <detail>``."""
    identity = load_identity(key)
    channel = connect()
    rpc = _Rpc(channel, identity)
    lines: list[str] = []
    try:
        join = await _join(rpc)
        while True:
            reader = await rpc.pull(join.run_id, 1 << 30)
            task = reader.finish()
            if task is not None and task.kind == "fit":
                break
        good = task.params.map(lambda a: a * 0 + 0.01)
        header = pb.ResultMessage.FromString(
            encode_result(task.task_id, uuid.uuid4().hex, "fit", task.round, num_examples=5, delta=good)[0]
        )
        padding = (join.max_update_bytes - header.result.total_bytes) // 4
        header.result.tensors.append(pb.TensorSpec(group="pad", name="x", dtype="float32", shape=[padding]))
        header.result.total_bytes += padding * 4
        first = header.SerializeToString()
        never = asyncio.Event()

        async def header_only() -> AsyncIterator[bytes]:
            yield first
            await never.wait()

        async def push() -> None:
            metadata = identity.sign(METHODS["PushResult"], BodyDigest().update(first).digest())
            try:
                reply = pb.PushReply.FromString(
                    await channel.stream_unary(METHODS["PushResult"], header_only(), metadata=metadata)
                )
                line = f"{pb.PushStatus.Name(reply.status)} {reply.detail}"
            except RpcError as exc:
                line = f"{exc.code.name} {exc.details}"
            lines.append(line)
            on_line(line)

        await asyncio.gather(*(push() for _ in range(count)))
    finally:
        await channel.close()
    return lines
