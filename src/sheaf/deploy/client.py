"""``sheaf client``: a party that trains on its own data and sends only updates and metrics.

A client connects to the server, presents its key, learns its client id and the run's
config, loads its own data file (:mod:`sheaf.deploy.local`) and the task, then loops:
pull a task (long poll), train or evaluate with the *same* client runner simulation uses
(:class:`~sheaf.backends.client_runner.ClientRunner`: same seeds from (run seed, round,
client id), same thread count), and push the result. A task names the client steps to run
around training; the client runs only steps it knows itself (by default sheaf's built-in
ones, :func:`~sheaf.run.assemble.builtin_client_steps`) and reports any other request as
a failure of that task. Heartbeats go out in the background, also while it trains.

Networks fail and servers restart: any failed call (an :class:`~sheaf.deploy.rpc.RpcError`,
whichever transport carries it: gRPC by default, or the ``connect`` given, e.g. an
in-process one) closes the channel, waits (0.2 s, doubling up to ``max_backoff``, with
jitter) and joins again. A result that could not be delivered is kept and delivered after
the reconnection with the same update id, so the server ignores it if the first delivery
did arrive. Only a refusal — an unknown key, a protocol mismatch — or unusable local data
ends the client, with one clear error.

Example:
    >>> from pathlib import Path
    >>> options = ClientOptions("fl.example.org:7443", Path("my.key"), Path("hungary.csv"), ca=Path("ca.pem"))
    >>> options.insecure, options.max_backoff
    (False, 10.0)
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import random
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from sheaf.backends.base import RoundWork
from sheaf.backends.client_runner import ClientRunner
from sheaf.core._version import __version__
from sheaf.core.config import RunConfig
from sheaf.core.errors import ClientFailure, SheafError
from sheaf.data.dataset import ClientData
from sheaf.deploy._proto import federation_pb2 as pb
from sheaf.deploy.auth import BodyDigest, ClientIdentity, load_identity
from sheaf.deploy.chunks import WireError
from sheaf.deploy.client_state import ClientStateFile
from sheaf.deploy.local import catalog_info, deployment_task, load_client_data
from sheaf.deploy.logs import log_event
from sheaf.deploy.plaintext import check_plaintext
from sheaf.deploy.rpc import Channel, Connector, RpcError, StatusCode
from sheaf.deploy.transport import METHODS, client_channel
from sheaf.deploy.wire import PROTOCOL, ReceivedTask, TaskReader, encode_result
from sheaf.privacy.ledger import with_client_privacy
from sheaf.run.assemble import builtin_client_steps
from sheaf.task.base import Task, prepare_worker
from sheaf.task.client_steps import ClientStep, resolve_steps, steps_by_name

__all__ = ["ClientOptions", "DeployedClient", "run_client"]

_log = logging.getLogger("sheaf.client")
#: What a refused join answers with: this client cannot take part until someone acts.
_REFUSED = (StatusCode.UNAUTHENTICATED, StatusCode.PERMISSION_DENIED, StatusCode.FAILED_PRECONDITION)
_PULL_WAIT = 20.0


@dataclass(frozen=True)
class ClientOptions:
    """How to reach the server and where this client's things are.

    Attributes:
        server: ``host:port`` of the server.
        key: this client's private key (PEM).
        data: this client's data file (CSV, Parquet or NPZ).
        ca: the deployment's CA certificate, to verify the server (TLS).
        insecure: plaintext instead of TLS (experiments on one machine only; refused for a
            server that is not on loopback unless ``insecure_non_loopback``).
        task: ``module:attr`` of the task; empty uses the one the run's config names.
        label: the label column of a CSV/Parquet file outside the catalog.
        state_dir: where per-client persistent state is kept between rounds.
        max_backoff: the longest wait, in seconds, between reconnection attempts.
        give_up_after: stop after this many seconds without reaching the server
            (0: never; a client normally outlives server restarts).
        max_task_mb: the largest task (model and payload) accepted, in MiB.
        privacy_budget: this client's own epsilon limit (0: none). With it the client
            keeps a privacy ledger in its state file and refuses any round of a
            differentially private run that would take it past the limit
            (:mod:`sheaf.privacy.ledger`); the server records the refusal as a dropout.
        insecure_non_loopback: allow ``insecure`` to a server that is not on loopback.
    """

    server: str
    key: Path
    data: Path
    ca: Path | None = None
    insecure: bool = False
    task: str = ""
    label: str = "label"
    state_dir: Path = Path("sheaf-client-state")
    max_backoff: float = 10.0
    give_up_after: float = 0.0
    max_task_mb: float = 4096.0
    privacy_budget: float = 0.0
    insecure_non_loopback: bool = False


@dataclass
class _Session:
    """What a join established: the run, this client's id, its data and task."""

    run_id: str
    client_id: int
    name: str
    config: RunConfig
    task: Task
    data: ClientData
    states: ClientStateFile
    runner: ClientRunner
    steps: dict[str, ClientStep]


class _Rpc:
    """Signed calls on one channel, whatever carries it; requests and replies are raw bytes.

    Every call raises :class:`~sheaf.deploy.rpc.RpcError` when it fails.
    """

    def __init__(self, channel: Channel, identity: ClientIdentity) -> None:
        self.identity = identity
        self.channel = channel

    def _sign(self, method: str, first: bytes) -> tuple[tuple[str, str], ...]:
        return self.identity.sign(METHODS[method], BodyDigest().update(first).digest())

    async def join(self) -> pb.JoinReply:
        body = pb.JoinRequest(protocol=PROTOCOL, sheaf_version=__version__).SerializeToString()
        reply = await self.channel.unary_unary(METHODS["Join"], body, metadata=self._sign("Join", body), timeout=15)
        return pb.JoinReply.FromString(reply)

    async def heartbeat(self, run_id: str, timeout: float) -> pb.HeartbeatReply:
        body = pb.HeartbeatRequest(run_id=run_id).SerializeToString()
        metadata = self._sign("Heartbeat", body)
        reply = await self.channel.unary_unary(METHODS["Heartbeat"], body, metadata=metadata, timeout=timeout)
        return pb.HeartbeatReply.FromString(reply)

    async def pull(self, run_id: str, limit: int) -> TaskReader:
        body = pb.PullRequest(run_id=run_id, wait_seconds=_PULL_WAIT).SerializeToString()
        reader = TaskReader(limit)
        async for message in self.channel.unary_stream(
            METHODS["PullTask"], body, metadata=self._sign("PullTask", body)
        ):
            reader.feed(message)
        return reader

    async def push(self, messages: list[bytes]) -> pb.PushReply:
        metadata = self._sign("PushResult", messages[0])
        reply = await self.channel.stream_unary(METHODS["PushResult"], messages, metadata=metadata)
        return pb.PushReply.FromString(reply)


class _Refused(Exception):
    """The server refused this client for good (unknown key, protocol mismatch)."""


def _work(session: _Session, task: ReceivedTask) -> list[bytes]:
    """Run one task; return the result's messages (a failure report if it cannot be sent)."""
    try:
        return _run_task(session, task)
    except WireError as exc:  # e.g. the task returned tensors of a dtype that cannot travel
        reason = f"{task.kind} failed: cannot send the result: {exc}"
        return encode_result(task.task_id, uuid.uuid4().hex, task.kind, task.round, failure=reason)


def _run_task(session: _Session, task: ReceivedTask) -> list[bytes]:
    update_id = uuid.uuid4().hex
    if task.kind == "evaluate":
        if len(session.data.test) == 0:
            return encode_result(task.task_id, update_id, "evaluate", task.round, loss=float("nan"))
        evaluation = session.runner.evaluate(session.data, task.params)
        if isinstance(evaluation, ClientFailure):
            return encode_result(task.task_id, update_id, "evaluate", task.round, failure=evaluation.reason)
        return encode_result(
            task.task_id,
            update_id,
            "evaluate",
            task.round,
            num_examples=evaluation.num_examples,
            metrics=evaluation.metrics,
            loss=evaluation.loss,
        )
    try:
        steps = resolve_steps(task.client_steps, session.steps)
    except SheafError as exc:  # the server asks for what this client does not run: refuse
        return encode_result(task.task_id, update_id, "fit", task.round, failure=f"fit refused: {exc}")
    state = session.states.state_for(task.round, task.aggregated_round)
    work = RoundWork(task.round, task.params, task.train, task.options, task.payload, steps)
    reply = session.runner.fit(session.data, work, state)
    if reply.update is None:
        failure = reply.failure or ClientFailure(session.client_id, "fit failed")
        return encode_result(task.task_id, update_id, "fit", task.round, failure=failure.reason)
    if reply.state is not None:
        session.states.set_pending(task.round, reply.state)
    update = reply.update
    return encode_result(
        task.task_id,
        update_id,
        "fit",
        task.round,
        num_examples=update.num_examples,
        metrics=update.metrics,
        delta=update.delta,
        extras=update.extras,
    )


class DeployedClient:
    """One client process's life: join, work, reconnect. See the module docstring.

    Args:
        options: where the server, key and data are.
        identity: the signing key (default: loaded from ``options.key``).
        client_steps: the client steps this client runs when a task names them (default:
            sheaf's built-in ones); a task naming any other step is refused.
        connect: opens a connection to the server (default: a gRPC channel to
            ``options.server``, TLS unless ``options.insecure``); e.g.
            :meth:`sheaf.deploy.inprocess.InProcessTransport.connect` for a server in this
            process.
    """

    def __init__(
        self,
        options: ClientOptions,
        identity: ClientIdentity | None = None,
        client_steps: tuple[ClientStep, ...] | None = None,
        *,
        connect: Connector | None = None,
    ) -> None:
        self.options = options
        #: The client steps this client agrees to run (default: sheaf's built-in ones).
        self.client_steps = builtin_client_steps() if client_steps is None else client_steps
        self.identity = identity if identity is not None else load_identity(options.key)
        if connect is None and options.insecure:
            warning = check_plaintext(options.server, role="client", allow_non_loopback=options.insecure_non_loopback)
            log_event(_log, logging.WARNING, "plaintext", server=options.server, warning=warning)
        self._connect: Connector = connect or functools.partial(
            client_channel, options.server, ca=options.ca, insecure=options.insecure
        )
        self._session: _Session | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sheaf-work")
        self._jitter = random.Random()
        self._reached = False  # whether the server answered since the last failure

    def _prepare(self, join: pb.JoinReply) -> _Session:
        config = RunConfig.from_dict(json.loads(join.config_json))
        task = deployment_task(config, self.options.task)
        if self.options.privacy_budget > 0:
            task = with_client_privacy(task, default_budget=self.options.privacy_budget)
        prepare_worker(task, config.threads)
        data = load_client_data(
            self.options.data,
            int(join.client_id),
            config,
            label=self.options.label,
            info=catalog_info(config.data.dataset),
        )
        states = ClientStateFile(self.options.state_dir / f"{join.run_id}-client{join.client_id}.npz")
        log_event(
            _log,
            logging.INFO,
            "data_loaded",
            client=join.client_id,
            train=len(data.train),
            test=len(data.test),
            file=str(self.options.data),
        )
        return _Session(
            join.run_id,
            int(join.client_id),
            join.client_name,
            config,
            task,
            data,
            states,
            ClientRunner(task, config.seed),
            steps_by_name(self.client_steps),
        )

    async def _heartbeats(self, rpc: _Rpc, run_id: str, interval: float) -> None:
        interval = max(interval, 0.05)
        while True:
            await asyncio.sleep(interval)
            try:
                await rpc.heartbeat(run_id, timeout=max(2 * interval, 5.0))
            except RpcError as exc:
                log_event(_log, logging.DEBUG, "heartbeat_failed", code=exc.code.name)

    async def _serve(self, rpc: _Rpc, pending: list[list[bytes]]) -> bool:
        """Join and work until the run ends (True) or the connection fails (raises)."""
        try:
            join = await rpc.join()
        except RpcError as exc:
            if exc.code in _REFUSED:
                raise _Refused(exc.details or exc.code.name) from None
            raise
        self._reached = True
        loop = asyncio.get_running_loop()
        # Heartbeats start at once: loading the task and data (importing torch) takes a while.
        heartbeats = asyncio.create_task(self._heartbeats(rpc, join.run_id, join.heartbeat_interval))
        limit = int(self.options.max_task_mb * (1 << 20))
        try:
            if self._session is None or self._session.run_id != join.run_id:
                pending.clear()  # results of another run mean nothing here
                self._session = await loop.run_in_executor(self._executor, self._prepare, join)
            session = self._session
            log_event(_log, logging.INFO, "joined", client=session.client_id, name=session.name, run=session.run_id)
            while True:
                if pending:
                    reply = await rpc.push(pending[0])
                    pending.clear()
                    status = pb.PushStatus.Name(reply.status).lower()
                    level = logging.WARNING if reply.status in (pb.REJECTED, pb.STALE) else logging.INFO
                    log_event(_log, level, "result_delivered", status=status, detail=reply.detail)
                reader = await rpc.pull(session.run_id, limit)
                if reader.idle is not None:
                    if reader.idle.finished:
                        log_event(_log, logging.INFO, "run_finished", client=session.client_id)
                        return True
                    continue
                task = reader.finish()
                if task is None or task.client_id != session.client_id:
                    continue
                log_event(_log, logging.INFO, "task_received", kind=task.kind, round=task.round)
                pending.append(await loop.run_in_executor(self._executor, _work, session, task))
        finally:
            heartbeats.cancel()

    async def run(self) -> int:
        """Work for the server until the run ends; returns the process exit status.

        Returns:
            0 when the run finished, 1 when ``give_up_after`` passed without reaching the
            server.

        Raises:
            SheafError: when the server refuses this client (unknown key, protocol
                mismatch) or its data or task cannot take part in the run.
        """
        loop = asyncio.get_running_loop()
        backoff, last_contact = 0.2, loop.time()
        pending: list[list[bytes]] = []
        while True:
            channel = self._connect()
            try:
                if await self._serve(_Rpc(channel, self.identity), pending):
                    return 0
            except _Refused as exc:
                log_event(_log, logging.ERROR, "refused", server=self.options.server, reason=str(exc))
                raise SheafError(f"server {self.options.server} refused this client: {exc}") from None
            except RpcError as exc:  # before SheafError: a failed call is a lost connection
                log_event(
                    _log,
                    logging.WARNING,
                    "connection_lost",
                    server=self.options.server,
                    code=exc.code.name,
                    detail=exc.details[:200],
                    retry_in=round(backoff, 2),
                )
            except SheafError as exc:
                if not isinstance(exc, WireError):
                    log_event(_log, logging.ERROR, "cannot_take_part", reason=str(exc))
                    raise
                log_event(_log, logging.WARNING, "bad_message_from_server", reason=str(exc))
            finally:
                await channel.close()
            if self._reached:  # it was up a moment ago: retry soon, and keep trying
                backoff, last_contact, self._reached = 0.2, loop.time(), False
            if self.options.give_up_after and loop.time() - last_contact > self.options.give_up_after:
                log_event(
                    _log, logging.ERROR, "giving_up", server=self.options.server, seconds=self.options.give_up_after
                )
                return 1
            await asyncio.sleep(backoff * (0.5 + self._jitter.random()))
            backoff = min(backoff * 2, self.options.max_backoff)

    def close(self) -> None:
        """Release the worker thread."""
        self._executor.shutdown(wait=False, cancel_futures=True)


def run_client(options: ClientOptions) -> int:
    """Run a client until the run ends (see :class:`DeployedClient`); returns the exit status."""
    client = DeployedClient(options)
    try:
        return asyncio.run(client.run())
    finally:
        client.close()
