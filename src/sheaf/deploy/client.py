"""``sheaf client``: a party that trains on its own data and sends only updates and metrics.

A client connects to the server, presents its key, learns its client id and what it needs
to know about the run (:class:`~sheaf.deploy.description.RunDescription`: the dataset, the
built-in model, the strategy's name, whether the run is private — never the server's
config), loads its own data file (:mod:`sheaf.deploy.local`) split by its own policy and
its own task (``task``: its own ``module:attr``, or the built-in model the run describes;
never code the server names), then loops: pull a task (long poll), check it against its
owner's policy (:mod:`sheaf.deploy.policy`, :mod:`sheaf.deploy.client_work`), train or
evaluate with the *same* client runner simulation uses
(:class:`~sheaf.backends.client_runner.ClientRunner`: the training seed each task brings,
which the server derives as a simulation does), and push the result. A task names the
client steps to run around training; the client runs only steps it holds itself (by
default sheaf's built-in ones, :func:`~sheaf.run.assemble.builtin_client_steps`) and its
policy agrees to, and reports any other request as its refusal of that task. Heartbeats go
out in the background, also while it trains. In a securely aggregated round its result
carries only its protocol keys; once the server accepted it, the client runs its side of
SecAgg+ over the ``SecAgg`` RPC (each call sends its reply to the server's last message and
asks for the next), and only its masked input leaves.

Every byte from the server is checked before it is trusted: the run id before it names a
file, the description's every field, a task's tensors against the client's own model before
any of their bytes is allocated. A task that cannot be read is one log line
(``bad_message_from_server``); the client then reconnects, waiting longer each time (up to
``max_backoff``), and never trains on it. A join it cannot use (a malformed description, a
model its policy does not agree to) ends the client with one line and exit status 2.

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
import dataclasses
import functools
import logging
import math
import random
import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from sheaf.core._version import __version__
from sheaf.core.errors import SheafError
from sheaf.deploy._proto import federation_pb2 as pb
from sheaf.deploy.auth import BodyDigest, ClientIdentity, load_identity
from sheaf.deploy.chunks import WireError
from sheaf.deploy.client_ledger import ClientLedger
from sheaf.deploy.client_state import ClientStateFile
from sheaf.deploy.client_work import ClientWork, task_digest
from sheaf.deploy.description import DescriptionError, RunDescription
from sheaf.deploy.local import catalog_info, client_task, load_client_data
from sheaf.deploy.logs import log_event
from sheaf.deploy.plaintext import check_plaintext
from sheaf.deploy.policy import ClientPolicy
from sheaf.deploy.rpc import Channel, Connector, RpcError, StatusCode
from sheaf.deploy.transport import METHODS, client_channel
from sheaf.deploy.wire import PROTOCOL, ReceivedTask, TaskReader
from sheaf.run.assemble import builtin_client_steps
from sheaf.secagg.client import ClientState
from sheaf.task.base import prepare_worker
from sheaf.task.client_steps import ClientStep, steps_by_name

__all__ = ["ClientOptions", "DeployedClient", "run_client"]

_log = logging.getLogger("sheaf.client")
#: What a refused join answers with: this client cannot take part until someone acts.
_REFUSED = (StatusCode.UNAUTHENTICATED, StatusCode.PERMISSION_DENIED, StatusCode.FAILED_PRECONDITION)
_PULL_WAIT = 20.0
#: The longest a client waits for the server's next secure-aggregation message.
_SECAGG_PATIENCE = 3600.0
#: What a run id may look like before it becomes part of a file name: no separators, no dots.
_RUN_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
#: The range a server's heartbeat interval is held to (a hostile one could ask for a flood).
_HEARTBEAT_RANGE = (0.05, 300.0)


def checked_run_id(run_id: str) -> str:
    """``run_id`` if it is safe to make part of a file name.

    Raises:
        DescriptionError: if it holds anything but 1 to 64 letters, digits, '-' and '_'.

    Example:
        >>> checked_run_id("4f2a9c")
        '4f2a9c'
        >>> checked_run_id("../../x")
        Traceback (most recent call last):
        ...
        sheaf.deploy.description.DescriptionError: the server's run id '../../x' is not 1 to 64 letters, digits, '-' and '_'; refusing to use it in a file name
    """
    if not _RUN_ID.fullmatch(run_id):
        raise DescriptionError(
            f"the server's run id {run_id[:80]!r} is not 1 to 64 letters, digits, '-' and '_'; "
            "refusing to use it in a file name"
        )
    return run_id


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
        task: ``module:attr`` of this client's own task; empty builds the built-in model
            the run describes (within ``policy``). Never code the server names.
        label: the label column of a CSV/Parquet file outside the catalog.
        state_dir: where per-client persistent state and the client's ledger are kept.
        max_backoff: the longest wait, in seconds, between reconnection attempts.
        give_up_after: stop after this many seconds without reaching the server
            (0: never; a client normally outlives server restarts).
        privacy_budget: this client's own epsilon limit (0: the policy's). Shorthand for
            ``policy.privacy.budget``: the client keeps a durable ledger in its state
            folder and refuses any round that would take it past the limit, and every
            round of a run without differential privacy; the server records the refusal.
        policy: the data owner's policy (:mod:`sheaf.deploy.policy`).
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
    privacy_budget: float = 0.0
    policy: ClientPolicy = field(default_factory=ClientPolicy)
    insecure_non_loopback: bool = False

    def effective_policy(self) -> ClientPolicy:
        """The policy with ``privacy_budget`` applied."""
        if self.privacy_budget <= 0:
            return self.policy
        privacy = dataclasses.replace(self.policy.privacy, budget=self.privacy_budget)
        return dataclasses.replace(self.policy, privacy=privacy)


@dataclass
class _Session:
    """What a join established: the run, this client's id and name, and its work."""

    run_id: str
    client_id: int
    name: str
    work: ClientWork


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
        """Pull the next task (no check of its header beyond the reader's own)."""
        reader, _ = await self.pull_checked(run_id, limit)
        return reader

    async def pull_checked(
        self, run_id: str, limit: int, check: Callable[[pb.Task], str | None] | None = None
    ) -> tuple[TaskReader, str]:
        """Pull the next task; returns the reader and the task's digest ("" if none came).

        ``check`` sees a task's header before any of its tensor bytes is taken; what it
        objects to is refused as a :class:`~sheaf.deploy.chunks.WireError`.
        """
        body = pb.PullRequest(run_id=run_id, wait_seconds=_PULL_WAIT).SerializeToString()
        reader, digest = TaskReader(limit), ""
        async for message in self.channel.unary_stream(
            METHODS["PullTask"], body, metadata=self._sign("PullTask", body)
        ):
            if not digest and check is not None:
                digest = _checked_header(message, check)
            reader.feed(message)
        return reader, digest

    async def secagg(self, run_id: str, round: int, instance: bytes, want: int, message: bytes) -> pb.SecAggReply:
        body = pb.SecAggRequest(
            run_id=run_id, round=round, instance=instance, want=want, message=message, wait_seconds=_PULL_WAIT
        ).SerializeToString()
        metadata = self._sign("SecAgg", body)
        reply = await self.channel.unary_unary(METHODS["SecAgg"], body, metadata=metadata, timeout=_PULL_WAIT + 15)
        return pb.SecAggReply.FromString(reply)

    async def push(self, messages: list[bytes]) -> pb.PushReply:
        metadata = self._sign("PushResult", messages[0])
        reply = await self.channel.stream_unary(METHODS["PushResult"], messages, metadata=metadata)
        return pb.PushReply.FromString(reply)


def _checked_header(message: bytes, check: Callable[[pb.Task], str | None]) -> str:
    """The digest of a task header ("" for an idle answer), once ``check`` accepts it.

    Raises:
        WireError: if ``check`` objects (a message that does not parse is left to the reader).
    """
    try:
        parsed = pb.TaskMessage.FromString(message)
    except Exception:  # the reader refuses it with its own words
        return ""
    if parsed.WhichOneof("part") != "task":
        return ""
    problem = check(parsed.task)
    if problem is not None:
        raise WireError(f"task refused before its tensors: {problem}")
    return task_digest(message)


class _Refused(Exception):
    """The server refused this client for good (unknown key, protocol mismatch)."""


def _heartbeat_interval(value: float) -> float:
    low, high = _HEARTBEAT_RANGE
    return min(max(value, low), high) if math.isfinite(value) else high


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
        #: The data owner's policy (``options.policy`` with ``options.privacy_budget`` applied).
        self.policy = options.effective_policy()
        if connect is None and options.insecure:
            warning = check_plaintext(options.server, role="client", allow_non_loopback=options.insecure_non_loopback)
            log_event(_log, logging.WARNING, "plaintext", server=options.server, warning=warning)
        self._connect: Connector = connect or functools.partial(
            client_channel, options.server, ca=options.ca, insecure=options.insecure
        )
        self._session: _Session | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sheaf-work")
        self._jitter = random.Random()
        self._reached = False  # whether the server answered sensibly since the last failure
        self._finished = False
        # A heartbeat's reply said the run is over: in an asynchronous run that can happen while
        # this client trains, and the server is gone before the result could be delivered.
        self._over = False

    def _prepare(self, join: pb.JoinReply) -> _Session:
        run_id = checked_run_id(join.run_id)  # before it is part of any path
        description = RunDescription.from_proto(join.run)
        policy = self.policy
        if policy.data.dataset and description.dataset != policy.data.dataset:
            raise DescriptionError(
                f"the run trains on dataset {description.dataset!r}; this client's file holds "
                f"{policy.data.dataset!r} (data.dataset)"
            )
        info = catalog_info(description.dataset)
        task = client_task(description, policy.training, self.options.task, info=info)
        prepare_worker(task, policy.training.threads)
        client_id = int(join.client_id)
        data = load_client_data(
            self.options.data,
            client_id,
            dataset=description.dataset,
            test_fraction=policy.data.test_fraction,
            split_seed=policy.data.split_seed,
            label=self.options.label,
            info=info,
        )
        folder = self.options.state_dir
        work = ClientWork(
            run_id,
            client_id,
            description,
            policy,
            task,
            data,
            steps_by_name(self.client_steps),
            ClientStateFile(folder / f"{run_id}-client{client_id}.npz"),
            ClientLedger(folder / f"ledger-{self.identity.key_id}.json"),
        )
        log_event(
            _log, logging.INFO, "data_loaded", client=client_id, train=len(data.train), test=len(data.test),
            file=str(self.options.data), dataset=description.dataset, strategy=description.strategy,
            privacy=description.privacy, rounds=description.rounds,
        )  # fmt: skip
        return _Session(run_id, client_id, join.client_name[:200], work)

    async def _heartbeats(self, rpc: _Rpc, run_id: str, interval: float) -> None:
        interval = max(interval, 0.05)
        while True:
            await asyncio.sleep(interval)
            try:
                reply = await rpc.heartbeat(run_id, timeout=max(2 * interval, 5.0))
                self._over = self._over or reply.finished
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
        loop = asyncio.get_running_loop()
        # Heartbeats start at once: loading the task and data (importing torch) takes a while.
        interval = _heartbeat_interval(join.heartbeat_interval)
        heartbeats = asyncio.create_task(self._heartbeats(rpc, checked_run_id(join.run_id), interval))
        try:
            if self._session is None or self._session.run_id != join.run_id:
                pending.clear()  # results of another run mean nothing here
                self._session = await loop.run_in_executor(self._executor, self._prepare, join)
            session = self._session
            work = session.work
            log_event(_log, logging.INFO, "joined", client=session.client_id, name=session.name, run=session.run_id)
            while True:
                if pending:
                    reply = await rpc.push(pending[0])
                    pending.clear()
                    status = pb.PushStatus.Name(reply.status).lower()
                    level = logging.WARNING if reply.status in (pb.REJECTED, pb.STALE) else logging.INFO
                    log_event(_log, level, "result_delivered", status=status, detail=reply.detail)
                    protocol, work.protocol = work.protocol, None
                    if protocol is not None and reply.status in (pb.ACCEPTED, pb.DUPLICATE):
                        await self._secure_aggregation(rpc, session, *protocol)
                task, digest = await self._pull(rpc, session)
                self._reached = True  # a usable answer: the server is up and speaks sense
                if task is None:
                    if self._finished:
                        log_event(_log, logging.INFO, "run_finished", client=session.client_id)
                        return True
                    continue
                log_event(_log, logging.INFO, "task_received", kind=task.kind, round=task.round)
                pending.append(await loop.run_in_executor(self._executor, work.answer, task, digest))
                if self._over:  # the run ended while it trained (FedBuff): nothing left to deliver to
                    log_event(_log, logging.INFO, "run_finished", client=session.client_id)
                    return True
        finally:
            heartbeats.cancel()

    async def _secure_aggregation(self, rpc: _Rpc, session: _Session, round: int, state: ClientState) -> None:
        """Run this client's side of the round's SecAgg+ (its keys went out with its result).

        Each call sends its reply to the server's last message and waits for the next one.
        A message the state machine refuses (out of turn, forged, against the rules) ends
        the protocol for this client with one log line; so does the server saying it is over.
        """
        loop = asyncio.get_running_loop()
        instance, want, outgoing = state.setup.instance, 1, b""
        patience = loop.time() + _SECAGG_PATIENCE
        while loop.time() < patience:
            reply = await rpc.secagg(session.run_id, round, instance, want, outgoing)
            outgoing = b""
            if reply.over or want == 0:
                level = logging.INFO if want == 0 and not reply.detail else logging.WARNING
                log_event(_log, level, "secagg_over", round=round, stage=state.stage.value, detail=reply.detail[:300])
                return
            if not reply.message:
                continue  # not yet: ask again
            state, answer = await loop.run_in_executor(
                self._executor, session.work.protocol_step, state, bytes(reply.message), want
            )
            if answer is None:
                log_event(_log, logging.WARNING, "secagg_refused", round=round, reason=state.reason[:300])
                return
            log_event(_log, logging.INFO, "secagg_sent", round=round, stage=state.stage.value, bytes=len(answer))
            outgoing, want = answer, (want + 1) % 5
        log_event(_log, logging.WARNING, "secagg_over", round=round, detail="no word from the server; gave up")

    async def _pull(self, rpc: _Rpc, session: _Session) -> tuple[ReceivedTask | None, str]:
        """The next task (None: no work now, or the run is over), and its digest.

        Raises:
            WireError: if what came is not a task this client can take (one log line, then
                the client reconnects; it never crashes on what a server sends).
        """
        self._finished = False
        work = session.work
        try:
            reader, digest = await rpc.pull_checked(session.run_id, work.task_limit, work.header_problem)
            if reader.idle is not None:
                self._finished = bool(reader.idle.finished)
                return None, ""
            task = reader.finish()
        except (RpcError, WireError):
            raise
        except Exception as exc:  # anything a hostile task provokes: refuse it, keep the client
            raise WireError(f"unusable task: {type(exc).__name__}: {str(exc)[:200]}") from None
        return task, digest

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
                if self._over:  # the server said the run is over, then went away: done
                    log_event(_log, logging.INFO, "run_finished", server=self.options.server)
                    return 0
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
                log_event(_log, logging.WARNING, "bad_message_from_server", reason=str(exc)[:500])
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
