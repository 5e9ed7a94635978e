"""A hostile server: it speaks sheaf's protocol to an unmodified client and sends what a test scripts.

:class:`FakeServer` is a :class:`~sheaf.deploy.rpc.Service` served by an
:class:`~sheaf.deploy.inprocess.InProcessTransport`, so a real
:class:`~sheaf.deploy.client.DeployedClient` joins it, pulls tasks and pushes results over
the real wire format, at unit speed. A test sets the join reply (any run id, any run
description) and queues task streams — well formed or not — and reads what the client
sent back (:attr:`FakeServer.results`), and when (:attr:`FakeServer.on_result` runs as each
result arrives, e.g. to look at the client's disk at that moment). Once every queued task
was answered (or refused as unreadable) it tells the client the run is over.

Example:
    >>> server = FakeServer(description(dataset="digits"))
    >>> server.join_reply(0).run.dataset
    'digits'
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any

from sheaf.core.config import TrainConfig
from sheaf.core.params import Params
from sheaf.core.update import Scalar
from sheaf.deploy._proto import federation_pb2 as pb
from sheaf.deploy.chunks import encode_tensors
from sheaf.deploy.rpc import CallContext, Handlers
from sheaf.deploy.transport import METHODS
from sheaf.deploy.wire import PROTOCOL, ReceivedResult, ResultReader, encode_task_header, idle_message, task_chunk


def description(**fields: Any) -> pb.RunDescription:
    """A run description: the test runs' (digits, 5 rounds, fedavg, no DP) with ``fields`` changed."""
    values: dict[str, Any] = {
        "dataset": "digits",
        "model": "mlp",
        "hidden": [64],
        "rounds": 5,
        "strategy": "fedavg",
        "privacy": "none",
    }
    return pb.RunDescription(**{**values, **fields})


def task_stream(
    kind: str,
    round: int,
    params: Params,
    *,
    client_id: int = 0,
    train: TrainConfig | None = None,
    options: Mapping[str, Scalar] | None = None,
    steps: Sequence[str] = (),
    payload: Mapping[str, Params] | None = None,
    seed: int = 7,
    aggregated_round: int = 0,
    task_id: str = "",
) -> list[bytes]:
    """Every message of a well-formed task: its header, then its tensors' chunks."""
    tensors = encode_tensors({"": params, **dict(payload or {})})
    header = encode_task_header(
        task_id or f"r{round}-{kind}-c{client_id}",
        kind,
        round,
        client_id,
        tensors,
        train=train if train is not None else (TrainConfig(epochs=1, lr=0.5) if kind == "fit" else None),
        options=options,
        aggregated_round=aggregated_round,
        client_steps=steps,
        seed=seed,
    )
    return [header, *(task_chunk(c) for c in tensors.chunks)]


def forged(stream: list[bytes], change: Callable[[pb.Task], None]) -> list[bytes]:
    """``stream`` with its header changed by ``change`` (anything a hostile server may write)."""
    message = pb.TaskMessage.FromString(stream[0])
    change(message.task)
    return [message.SerializeToString(), *stream[1:]]


class FakeServer:
    """Serves one client a scripted run (see the module docstring).

    Args:
        run: the run description the join reply carries.
        run_id: the run id it carries (any string: the client must check it).
        heartbeat_interval: what it asks of the client.
    """

    def __init__(self, run: pb.RunDescription, run_id: str = "run1", heartbeat_interval: float = 0.05) -> None:
        self.run = run
        self.run_id = run_id
        self.heartbeat_interval = heartbeat_interval
        self.tasks: list[list[bytes]] = []
        self._unreadable: set[int] = set()
        self.results: list[ReceivedResult] = []
        self.joins = 0
        self.served = 0
        self.on_result: Callable[[ReceivedResult], None] = lambda result: None

    def queue(self, *streams: list[bytes], unreadable: bool = False) -> FakeServer:
        """Add task streams, served one per pull in order; returns self.

        ``unreadable``: the client must refuse these without answering (the run ends
        without waiting for their results).
        """
        for stream in streams:
            if unreadable:
                self._unreadable.add(len(self.tasks))
            self.tasks.append(stream)
        return self

    def join_reply(self, client_id: int) -> pb.JoinReply:
        """What it answers a join with."""
        return pb.JoinReply(
            protocol=PROTOCOL,
            client_id=client_id,
            client_name="hostile-test",
            run_id=self.run_id,
            heartbeat_interval=self.heartbeat_interval,
            chunk_bytes=1 << 20,
            max_update_bytes=1 << 30,
            run=self.run,
        )

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Nothing to attach."""

    def handlers(self) -> Handlers:
        """Join, Heartbeat, PullTask and PushResult, without checking signatures."""

        async def join(request: bytes, context: CallContext) -> bytes:
            self.joins += 1
            return self.join_reply(0).SerializeToString()

        async def heartbeat(request: bytes, context: CallContext) -> bytes:
            return pb.HeartbeatReply(finished=False).SerializeToString()

        async def pull(request: bytes, context: CallContext) -> AsyncIterator[bytes]:
            if self.served < len(self.tasks):
                self.served += 1
                for message in self.tasks[self.served - 1]:
                    yield message
                return
            await asyncio.sleep(0.01)  # a long poll, briefly
            yield idle_message(0.0, finished=len(self.results) >= self._answerable())

        async def push(requests: AsyncIterator[bytes], context: CallContext) -> bytes:
            reader = ResultReader(1 << 30)
            async for message in requests:
                reader.feed(message)
            result = reader.finish()
            self.on_result(result)
            self.results.append(result)
            return pb.PushReply(status=pb.ACCEPTED).SerializeToString()

        return Handlers(
            unary_unary={METHODS["Join"]: join, METHODS["Heartbeat"]: heartbeat},
            unary_stream={METHODS["PullTask"]: pull},
            stream_unary={METHODS["PushResult"]: push},
        )

    def _answerable(self) -> int:
        """How many results to wait for: one per queued task the client can read."""
        return len(self.tasks) - len(self._unreadable)

    def answers(self, round: int, kind: str = "fit") -> list[ReceivedResult]:
        """The results the client sent for ``round``'s ``kind`` tasks, in order."""
        return [r for r in self.results if r.round == round and r.kind == kind]
