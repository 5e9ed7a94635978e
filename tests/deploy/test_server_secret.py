"""The server's run secret: deployed cohorts come from it, a redone round releases the same noise.

Issue 13, item 1: a deployed server samples cohorts from a secret of its own (from the
operating system's CSPRNG, kept in the run store, never sent), not from the run seed every
client could be told. Item 6: a server that dies after the new model left for the clients'
evaluation, but before it committed the round, redoes the round on restart — and releases
the same noised model again, not a second draw of noise (its noise for a round is a keyed
stream of the secret and the round).
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from sheaf.core.params import Params
from sheaf.deploy._proto import federation_pb2 as pb
from sheaf.deploy.inprocess import InProcessTransport
from sheaf.deploy.keys import KeySet
from sheaf.deploy.rpc import Channel, Metadata
from sheaf.deploy.server import stored_secret
from sheaf.evaluation.history import RoundRecord
from sheaf.run.population import Population
from sheaf.run.store import RunStore
from tests.deploy.conftest import AllBack, client_files, deploy_config, start_client, start_server


class _Recorded:
    """A connection that keeps every message the server sends to this client."""

    def __init__(self, inner: Channel, received: list[bytes]) -> None:
        self.inner, self.received = inner, received

    async def unary_unary(
        self, method: str, request: bytes, *, metadata: Metadata = (), timeout: float | None = None
    ) -> bytes:
        reply = await self.inner.unary_unary(method, request, metadata=metadata, timeout=timeout)
        self.received.append(reply)
        return reply

    async def unary_stream(
        self, method: str, request: bytes, *, metadata: Metadata = (), timeout: float | None = None
    ) -> AsyncIterator[bytes]:
        async for message in self.inner.unary_stream(method, request, metadata=metadata, timeout=timeout):
            self.received.append(message)
            yield message

    async def stream_unary(
        self, method: str, requests: Sequence[bytes], *, metadata: Metadata = (), timeout: float | None = None
    ) -> bytes:
        reply = await self.inner.stream_unary(method, requests, metadata=metadata, timeout=timeout)
        self.received.append(reply)
        return reply

    async def close(self) -> None:
        await self.inner.close()


def _recording(transport: InProcessTransport, received: list[bytes]) -> Any:
    return lambda: _Recorded(transport.connect(), received)


def _tasks(received: list[bytes]) -> list[pb.Task]:
    tasks = []
    for message in received:
        try:
            parsed = pb.TaskMessage.FromString(message)
        except Exception:  # a join or push reply
            continue
        if parsed.WhichOneof("part") == "task":
            tasks.append(parsed.task)
    return tasks


def test_deployed_cohorts_come_from_the_servers_secret_which_no_client_receives(
    tmp_path: Path, keys: KeySet, transport: InProcessTransport
) -> None:
    config = deploy_config(tmp_path, "rounds=6", "fraction=0.5", "min_clients=2", "evaluation.federated=false")
    files = client_files(config, tmp_path / "data")
    server = start_server(config, keys, transport=transport)
    received: list[list[bytes]] = [[] for _ in range(4)]
    clients = [
        start_client(
            transport, keys.client_keys[i], files[i], tmp_path / "s", connect=_recording(transport, received[i])
        )
        for i in range(4)
    ]

    result = server.result()

    assert [c.status() for c in clients] == [0, 0, 0, 0]
    secret = stored_secret(result.run_path)
    assert secret is not None and len(secret) == 32
    population = Population((0, 1, 2, 3), secret=secret)
    with RunStore.open(result.run_path, readonly=True) as store:
        trained = {
            r: sorted(c.client_id for rr, c in store.client_records(phase="fit") if rr == r) for r in range(1, 7)
        }
    assert trained == {r: population.cohort(2, seed=config.seed, round=r) for r in range(1, 7)}
    # Each client heard of its own rounds only, and never the secret, in any form.
    for client_id, messages in enumerate(received):
        assert {task.client_id for task in _tasks(messages)} == ({client_id} if _tasks(messages) else set())
        assert [t.round for t in _tasks(messages)] == [r for r in range(1, 7) if client_id in trained[r]]
        for message in messages:
            assert secret not in message and secret.hex().encode() not in message


class _DieBeforeCommitting:
    """Makes the run store fail to commit ``round`` once: the server dies before it is saved."""

    def __init__(self, round: int, monkeypatch: pytest.MonkeyPatch) -> None:
        self.round, self.died = round, threading.Event()
        self.models: list[Params] = []  # the round's model, as computed by each attempt
        commit = RunStore.commit_round

        def commit_or_die(store: RunStore, record: RoundRecord, *args: Any, **kwargs: Any) -> None:
            if record.round == self.round:
                self.models.append(args[0])
            if record.round == self.round and not self.died.is_set():
                self.died.set()
                raise RuntimeError("killed before committing")
            commit(store, record, *args, **kwargs)

        monkeypatch.setattr(RunStore, "commit_round", commit_or_die)


def test_a_round_redone_after_a_crash_releases_the_same_noised_model(
    tmp_path: Path, keys: KeySet, transport: InProcessTransport, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Federated evaluation is off in private runs, so nothing of the lost round leaves the
    # server by default; the noised model it computed is what a redo must not re-draw.
    config = deploy_config(
        tmp_path, "rounds=2", "fraction=0.5", "min_clients=2", "privacy.mode=central", "privacy.noise_multiplier=1",
    )  # fmt: skip
    files = client_files(config, tmp_path / "data")
    dying = _DieBeforeCommitting(1, monkeypatch)
    received: list[list[bytes]] = [[] for _ in range(4)]
    first = start_server(config, keys, transport=transport)
    clients = [
        start_client(
            transport, keys.client_keys[i], files[i], tmp_path / "s", connect=_recording(transport, received[i])
        )
        for i in range(4)
    ]
    with pytest.raises(RuntimeError, match="killed before committing"):
        first.result()
    sent_before = [t for messages in received for t in _tasks(messages)]

    back = AllBack(transport, 4)
    again = start_server(config, keys, transport=transport, listener=back)  # the same command: it resumes
    result = again.result()

    assert [c.status() for c in clients] == [0, 0, 0, 0]
    tasks = [t for messages in received for t in _tasks(messages)]
    first_try, redone = dying.models
    assert redone.array_equal(first_try)  # the redone round computed exactly the noised model it lost
    round_two = {t.tensors_digest for t in tasks if t.kind == pb.FIT and t.round == 2}
    assert len(round_two) == 1  # and that model is what round 2's clients were sent
    cohorts = [sorted(t.client_id for t in ts if t.kind == pb.FIT and t.round == 1) for ts in (sent_before, tasks)]
    assert cohorts[1] == sorted(cohorts[0] * 2)  # the resumed run sampled round 1's cohort from the same secret
    assert result.history.rounds_completed == 2
