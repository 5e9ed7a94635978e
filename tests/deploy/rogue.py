"""A misbehaving client: it holds a valid key but sends bad updates, one kind per round.

Used in-process by the loopback tests and as a real process by the e2e test::

    python -m tests.deploy.rogue --port 7443 --key client-3.key --ca ca.pem nan shape dtype oversize

Modes (one fit round each): ``nan`` (a NaN in the delta), ``shape`` (a tensor of the wrong
shape), ``dtype`` (float64 instead of float32), ``oversize`` (declares more bytes than the
server accepts), ``bigchunk`` (one 5 MiB chunk message), ``tampered`` (a header that does
not match its signature), ``duplicate`` (a valid update delivered twice); ``honest`` sends a
valid update and ``pause`` goes silent for a while, then joins again. It answers every
evaluation with a failure report and prints one line per push: ``<mode> <status> <detail>``.
"""

from __future__ import annotations

import argparse
import asyncio
import uuid
from pathlib import Path

import grpc
import grpc.aio
import numpy as np

from sheaf.core.params import Params
from sheaf.deploy._proto import federation_pb2 as pb
from sheaf.deploy.auth import BodyDigest, load_identity
from sheaf.deploy.client import _Rpc
from sheaf.deploy.transport import METHODS, client_options
from sheaf.deploy.wire import ReceivedTask, encode_result


def _bad_result(mode: str, task: ReceivedTask, max_bytes: int) -> list[bytes]:
    update_id = uuid.uuid4().hex
    good = task.params.map(lambda a: a * 0 + 0.01)
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


def _channel(target: str, ca: Path | None) -> grpc.aio.Channel:
    # A roomy send limit, so the oversized messages actually leave this process.
    options = [*client_options(), ("grpc.max_send_message_length", 64 << 20)]
    if ca is None:
        return grpc.aio.insecure_channel(target, options=options)
    credentials = grpc.ssl_channel_credentials(root_certificates=ca.read_bytes())
    return grpc.aio.secure_channel(target, credentials, options=options)


async def _join(rpc: _Rpc) -> pb.JoinReply:
    for _ in range(300):  # the server may still be starting
        try:
            return await rpc.join()
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.UNAVAILABLE:
                raise
            await asyncio.sleep(0.1)
    raise TimeoutError("the server did not come up")


async def rogue(target: str, key: Path, modes: list[str], *, ca: Path | None = None, pause: float = 3.0) -> list[str]:
    """Join with a valid key and send one bad update per fit round; return one line per push.

    Besides the bad modes: ``honest`` answers one fit with a valid update; ``pause`` goes
    silent for ``pause`` seconds (no requests at all), then joins again.
    """
    identity = load_identity(key)
    channel = _channel(target, ca)
    rpc = _Rpc(channel, identity)
    lines: list[str] = []
    try:
        join = await _join(rpc)
        remaining = list(modes)
        while remaining:
            if remaining[0] == "pause":
                remaining.pop(0)
                await channel.close()
                await asyncio.sleep(pause)
                channel = _channel(target, ca)
                rpc = _Rpc(channel, identity)
                join = await _join(rpc)
                lines.append("pause rejoined")
                continue
            reader = await rpc.pull(join.run_id, 1 << 30)
            if reader.idle is not None:
                if reader.idle.finished:
                    break
                continue
            task = reader.finish()
            assert task is not None
            if task.kind == "evaluate":
                await rpc.push(encode_result(task.task_id, uuid.uuid4().hex, "evaluate", task.round, failure="no"))
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
                    reply = await rpc._push(iter(messages), metadata=metadata)
                    answer = pb.PushReply.FromString(reply)
                    lines.append(f"{mode} {pb.PushStatus.Name(answer.status)} round={task.round} {answer.detail}")
                except grpc.aio.AioRpcError as exc:
                    lines.append(f"{mode} {exc.code().name} round={task.round} {exc.details()}")
    finally:
        await channel.close()
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--key", type=Path, required=True)
    parser.add_argument("--ca", type=Path)
    parser.add_argument("modes", nargs="+")
    args = parser.parse_args()
    for line in asyncio.run(rogue(f"localhost:{args.port}", args.key, args.modes, ca=args.ca)):
        print(line, flush=True)


if __name__ == "__main__":
    main()
