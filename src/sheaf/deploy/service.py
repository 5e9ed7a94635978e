"""The server's handlers: authenticate, decode, check, and hand over to the coordinator.

The handlers take and return **raw bytes** (no automatic deserialisation), so every
request is authenticated over exactly the bytes that arrived before anything parses them
(:mod:`sheaf.deploy.auth`), and every decode goes through the checked readers of
:mod:`sheaf.deploy.wire`. A refused request gets a status with one line saying why, and a
log event; nothing a client sends can stop the server.

The handlers know nothing of gRPC: they see a :class:`~sheaf.deploy.rpc.CallContext`
(metadata, peer, abort), and a transport serves them (:mod:`sheaf.deploy.transport` over
gRPC, :mod:`sheaf.deploy.inprocess` in one process).

A result is checked in stages, each cheaper than the next: its signature (over its
header), whether its task is still awaited (else ``STALE``, or ``DUPLICATE`` for a repeat
delivery), the declared tensors against the model and the size limit — all before any
tensor bytes are taken — then, once received, the bytes against the header's digest,
and the values against the round's acceptance rule (finite, the weight the client may
claim, the norm bound, the strategy's metrics: :mod:`sheaf.deploy.validation`); an
evaluation's claimed examples are bounded as a fit's are. A rejected update settles the
client's share of the round as a dropout with the reason, the client hears why, and the
round goes on.

Example:
    >>> ServiceSettings("run-1", pb.RunDescription(), heartbeat_interval=5.0, max_update_bytes=1 << 20).max_update_bytes
    1048576
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import math
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, NoReturn

from sheaf.core.acceptance import UpdateRule
from sheaf.core.errors import SheafError
from sheaf.core.params import Params
from sheaf.core.update import Update
from sheaf.deploy._proto import federation_pb2 as pb
from sheaf.deploy.auth import SIGNATURE_HEADER, AuthError, AuthorizedClient, BodyDigest, RequestVerifier
from sheaf.deploy.chunks import CHUNK_BYTES, WireError
from sheaf.deploy.coordinator import Coordinator
from sheaf.deploy.logs import log_event
from sheaf.deploy.rpc import CallContext, Handlers, Metadata, StatusCode, UnaryHandler
from sheaf.deploy.streams import ResultStreams, StreamBusy, StreamClaim
from sheaf.deploy.throttle import RefusalLog
from sheaf.deploy.transport import METHODS
from sheaf.deploy.validation import declared_problem, value_problem
from sheaf.deploy.wire import PROTOCOL, ResultReader, idle_message

__all__ = ["FederationService", "ServiceSettings"]

_log = logging.getLogger("sheaf.server")
_STATUS = {"accepted": pb.ACCEPTED, "duplicate": pb.DUPLICATE, "stale": pb.STALE, "rejected": pb.REJECTED}

#: The longest a pull is held open waiting for work.
MAX_PULL_WAIT = 30.0


@dataclass(frozen=True)
class ServiceSettings:
    """What the handlers tell clients and enforce.

    Attributes:
        run_id: the run's id; a client of another run must join again.
        description: what clients are told about the run when they join
            (:class:`~sheaf.deploy.description.RunDescription`; never the server's config).
        heartbeat_interval: seconds between client heartbeats.
        max_update_bytes: the largest update accepted (all its tensors).
        receive_timeout: the most seconds between two messages of a result stream.
    """

    run_id: str
    description: pb.RunDescription
    heartbeat_interval: float
    max_update_bytes: int
    receive_timeout: float = 30.0


def _signature(metadata: Metadata) -> str:
    for key, value in metadata:
        if key == SIGNATURE_HEADER:
            return value.decode() if isinstance(value, bytes) else value
    raise AuthError("request lacks the sheaf-signature metadata")


class FederationService:
    """The ``sheaf.v1.Federation`` service on top of a :class:`Coordinator`.

    Args:
        coordinator: the server's live state.
        verifier: checks every request's signature.
        settings: what the handlers enforce.
        refusals: logs refused requests, throttled per peer (default: at most 10 lines per
            peer a minute).
    """

    def __init__(
        self,
        coordinator: Coordinator,
        verifier: RequestVerifier,
        settings: ServiceSettings,
        refusals: RefusalLog | None = None,
    ) -> None:
        self.coordinator = coordinator
        self.verifier = verifier
        self.settings = settings
        self.refusals = refusals or RefusalLog(_log)
        # Judging an update (finite? how long?) reads every value: done on a thread of its own,
        # one update at a time, so the event loop keeps receiving meanwhile.
        self._judge: ThreadPoolExecutor | None = None
        self.streams = ResultStreams(settings.receive_timeout)
        self._work_posted: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    # Wiring ----------------------------------------------------------------------------
    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Attach to the server's event loop, so posted work wakes waiting pulls."""
        self._loop = loop
        self._work_posted = asyncio.Event()

        def wakeup() -> None:
            loop.call_soon_threadsafe(self._wake)

        self.coordinator.wakeup = wakeup

    def _wake(self) -> None:
        # Work was posted or settled: pulls look again; results for what is no longer awaited stop.
        if self._work_posted is not None:
            self._work_posted.set()
            self._work_posted = asyncio.Event()
        self.streams.abandon(self.coordinator.expects)

    def close(self) -> None:
        """Stop the thread that judges updates (the server calls it when it stops)."""
        if self._judge is not None:
            self._judge.shutdown(wait=False, cancel_futures=True)

    async def _judged(self, update: Update, like: Params, rule: UpdateRule) -> tuple[str | None, float]:
        if self._judge is None:
            self._judge = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sheaf-judge")
        return await asyncio.get_running_loop().run_in_executor(self._judge, value_problem, update, like, rule)

    def handlers(self) -> Handlers:
        """The four methods, by path, for a transport to serve (raw bytes in and out).

        Every message's bytes are counted on the way (the coordinator's traffic figures).
        """
        count = self.coordinator.count_traffic

        def unary(method: UnaryHandler) -> UnaryHandler:
            async def counted(request: bytes, context: CallContext) -> bytes:
                count(received=len(request))
                reply = await method(request, context)
                count(sent=len(reply))
                return reply

            return counted

        async def pull(request: bytes, context: CallContext) -> AsyncIterator[bytes]:
            count(received=len(request))
            async for message in self.pull_task(request, context):
                count(sent=len(message))
                yield message

        async def push(requests: AsyncIterator[bytes], context: CallContext) -> bytes:
            async def counted() -> AsyncIterator[bytes]:
                async for message in requests:
                    count(received=len(message))
                    yield message

            reply = await self.push_result(counted(), context)
            count(sent=len(reply))
            return reply

        return Handlers(
            unary_unary={
                METHODS["Join"]: unary(self.join),
                METHODS["Heartbeat"]: unary(self.heartbeat),
                METHODS["SecAgg"]: unary(self.secagg),
            },
            unary_stream={METHODS["PullTask"]: pull},
            stream_unary={METHODS["PushResult"]: push},
        )

    # Shared steps ----------------------------------------------------------------------
    async def _refuse(self, context: CallContext, code: StatusCode, event: str, reason: str, **fields: Any) -> NoReturn:
        self.refusals.log(context.peer(), event, reason=reason, **fields)
        await context.abort(code, reason)

    async def _authenticate(self, context: CallContext, method: str, body: bytes) -> AuthorizedClient:
        try:
            client = self.verifier.authenticate(METHODS[method], context.metadata(), BodyDigest().update(body).digest())
        except AuthError as exc:
            await self._refuse(context, StatusCode.UNAUTHENTICATED, "request_refused", str(exc), method=method)
        self.coordinator.touch(client.client_id, context.peer())
        return client

    async def _parse(self, context: CallContext, message_type: type[Any], body: bytes) -> Any:
        message = message_type()
        try:
            message.ParseFromString(body)
        except Exception as exc:  # any parser error is the client's: refuse the request, keep serving
            await self._refuse(
                context,
                StatusCode.INVALID_ARGUMENT,
                "request_malformed",
                f"malformed {message_type.__name__}: {exc}",
            )
        return message

    async def _check_run(self, context: CallContext, run_id: str, client: AuthorizedClient) -> None:
        if run_id != self.settings.run_id:
            await self._refuse(
                context,
                StatusCode.FAILED_PRECONDITION,
                "request_refused",
                f"this server runs {self.settings.run_id}, not {run_id or 'nothing'}; join again",
                client=client.client_id,
            )

    # Handlers --------------------------------------------------------------------------
    async def join(self, request: bytes, context: CallContext) -> bytes:
        """Authenticate a client and tell it who it is and what it needs to know about the run."""
        client = await self._authenticate(context, "Join", request)
        message: pb.JoinRequest = await self._parse(context, pb.JoinRequest, request)
        if message.protocol != PROTOCOL:
            await self._refuse(
                context,
                StatusCode.FAILED_PRECONDITION,
                "request_refused",
                f"client speaks protocol {message.protocol}, this server {PROTOCOL}; install matching sheaf versions",
                client=client.client_id,
            )
        log_event(_log, logging.INFO, "client_joined", client=client.client_id, name=client.name, peer=context.peer())
        reply = pb.JoinReply(
            protocol=PROTOCOL,
            client_id=client.client_id,
            client_name=client.name,
            run_id=self.settings.run_id,
            run=self.settings.description,
            heartbeat_interval=self.settings.heartbeat_interval,
            chunk_bytes=CHUNK_BYTES,
            max_update_bytes=self.settings.max_update_bytes,
        )
        return reply.SerializeToString()

    async def heartbeat(self, request: bytes, context: CallContext) -> bytes:
        """Note that the client is alive; tell it whether the run is over."""
        client = await self._authenticate(context, "Heartbeat", request)
        message: pb.HeartbeatRequest = await self._parse(context, pb.HeartbeatRequest, request)
        await self._check_run(context, message.run_id, client)
        return pb.HeartbeatReply(finished=self.coordinator.finished).SerializeToString()

    async def pull_task(self, request: bytes, context: CallContext) -> AsyncIterator[bytes]:
        """Stream the client's next task, waiting up to its ``wait_seconds`` for one."""
        client = await self._authenticate(context, "PullTask", request)
        message: pb.PullRequest = await self._parse(context, pb.PullRequest, request)
        await self._check_run(context, message.run_id, client)
        if not math.isfinite(message.wait_seconds):  # NaN once made the wait below spin for ever
            await self._refuse(
                context, StatusCode.INVALID_ARGUMENT, "request_malformed",
                f"wait_seconds must be a finite number of seconds, got {message.wait_seconds}", client=client.client_id,
            )  # fmt: skip
        loop = asyncio.get_running_loop()
        deadline = loop.time() + min(max(message.wait_seconds, 0.0), MAX_PULL_WAIT)
        while True:
            if self.coordinator.finished:
                yield idle_message(0.0, finished=True)
                return
            task = self.coordinator.task_for(client.client_id)
            if task is not None:
                header, chunks = task
                for data in (header, *chunks):
                    yield data
                return
            remaining = deadline - loop.time()
            event = self._work_posted
            if remaining <= 0 or event is None:
                yield idle_message(0.0)
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), remaining)

    async def secagg(self, request: bytes, context: CallContext) -> bytes:
        """Take a client's secure-aggregation message; hand it the server's next one (long poll).

        The message is judged by :class:`~sheaf.deploy.secagg_exchange.SecAggExchange` as
        coming from the authenticated client; a refused one ends the protocol for that
        client, with the reason in the reply (and its share of the round is settled as failed).
        """
        client = await self._authenticate(context, "SecAgg", request)
        message: pb.SecAggRequest = await self._parse(context, pb.SecAggRequest, request)
        await self._check_run(context, message.run_id, client)
        if not math.isfinite(message.wait_seconds) or not 0 <= message.want <= 4:
            await self._refuse(
                context, StatusCode.INVALID_ARGUMENT, "request_malformed",
                f"want must be 0..4 and wait_seconds finite, got {message.want} and {message.wait_seconds}",
                client=client.client_id,
            )  # fmt: skip
        exchange = self.coordinator.secagg
        cid, instance = client.client_id, bytes(message.instance)
        if message.message:
            problem = exchange.submit(cid, message.round, instance, bytes(message.message))
            if problem is not None:
                self.refusals.log(context.peer(), "secagg_refused", reason=problem, client=cid)
                return pb.SecAggReply(over=True, detail=problem).SerializeToString()
        if message.want == 0:
            return pb.SecAggReply(over=True).SerializeToString()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + min(max(message.wait_seconds, 0.0), MAX_PULL_WAIT)
        while True:
            data, over, detail = exchange.message_for(cid, message.round, instance, message.want)
            remaining = deadline - loop.time()
            event = self._work_posted
            if data or over or remaining <= 0 or event is None:
                return pb.SecAggReply(message=data, over=over, detail=detail).SerializeToString()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), remaining)

    async def push_result(self, requests: AsyncIterator[bytes], context: CallContext) -> bytes:
        """Receive, check and settle one result (one stream per client at a time)."""
        metadata = context.metadata()
        try:
            client, pending = self.verifier.precheck(METHODS["PushResult"], metadata)
            stream = aiter(requests)
            first = await self.streams.first(stream)
            if first is None:
                raise AuthError("empty result stream")
            self.verifier.verify(client, pending, _signature(metadata), BodyDigest().update(first).digest())
        except AuthError as exc:
            await self._refuse(context, StatusCode.UNAUTHENTICATED, "request_refused", str(exc), method="PushResult")
        except WireError as exc:  # nothing came within the receive deadline
            await self._refuse(context, StatusCode.DEADLINE_EXCEEDED, "request_refused", str(exc), method="PushResult")
        self.coordinator.touch(client.client_id, context.peer())
        try:
            with self.streams.claim(client.client_id) as claim:
                status, detail = await self._receive(client, first, stream, claim)
        except StreamBusy as exc:
            await self._refuse(context, StatusCode.RESOURCE_EXHAUSTED, "request_refused", str(exc), method="PushResult")
        if status == "duplicate":
            log_event(_log, logging.INFO, "duplicate_ignored", client=client.client_id, detail=detail)
        elif status == "stale":
            log_event(_log, logging.INFO, "stale_result", client=client.client_id, detail=detail)
        return pb.PushReply(status=_STATUS[status], detail=detail).SerializeToString()

    async def _receive(
        self, client: AuthorizedClient, first: bytes, stream: AsyncIterator[bytes], claim: StreamClaim
    ) -> tuple[str, str]:
        cid = client.client_id
        reader = ResultReader(self.settings.max_update_bytes)
        try:
            reader.feed(first)
        except WireError as exc:
            header = reader.header
            if header is None:  # not even a header: nothing to settle, just refuse it
                log_event(_log, logging.WARNING, "result_refused", client=cid, reason=str(exc))
                return "rejected", str(exc)
            return self._reject(cid, header.task_id, header.update_id, str(exc))
        header = reader.header
        assert header is not None
        found = self.coordinator.awaited(cid, header.task_id)
        if found is None or found[1].state == "done":
            return self.coordinator.settle(cid, header.task_id, header.update_id)  # stale or duplicate
        work, slot = found
        like = work.like_of(slot)  # open work (FedBuff): each share has its own model version
        kind = {pb.FIT: "fit", pb.EVALUATE: "evaluate"}.get(header.kind)
        if kind != work.kind or header.round != work.round_of(slot):
            return self._reject(
                cid, header.task_id, header.update_id, f"result is for a {kind} of round {header.round}"
            )
        if work.kind == "fit" and not header.failure and work.secure:
            if header.tensors or not header.secagg:  # its update leaves only masked, in the protocol
                reason = "a securely aggregated fit result carries its client's keys and no tensors"
                return self._reject(cid, header.task_id, header.update_id, reason)
        elif header.secagg:
            return self._reject(cid, header.task_id, header.update_id, "this round is not securely aggregated")
        elif work.kind == "fit" and not header.failure and like is not None:
            encoding = work.rule.encoding if work.rule is not None else ()
            problem = declared_problem(header.tensors, like, encoding)
            if problem is not None:
                return self._reject(cid, header.task_id, header.update_id, problem)
        try:
            received = await self.streams.read(claim, header.task_id, reader, stream)
        except WireError as exc:
            return self._reject(cid, header.task_id, header.update_id, str(exc))
        if received is None:  # its share was settled otherwise meanwhile, or the round is over
            return self.coordinator.settle(cid, header.task_id, header.update_id)
        result = received
        if result.failure:
            reason = f"{result.kind} failed on the client: {result.failure}"
            return self.coordinator.settle(cid, result.task_id, result.update_id, failure=reason)
        if result.kind == "fit" and like is not None and (result.delta is not None or result.encoded is not None):
            delta = result.delta if result.delta is not None else Params({})
            update = Update(cid, delta, result.num_examples, result.metrics, result.extras, result.encoded)
            problem, norm = await self._judged(update, like, work.rule or UpdateRule())
            if problem is not None:
                return self._reject(cid, result.task_id, result.update_id, problem)
            if result.encoded is None:  # judged: the fold need not judge it again
                result = dataclasses.replace(result, norm=norm)
        elif result.kind == "evaluate" and result.num_examples > 0:
            if not math.isfinite(result.loss):
                return self._reject(cid, result.task_id, result.update_id, f"evaluation loss is {result.loss}")
            try:
                (work.rule or UpdateRule()).check_weight(cid, result.num_examples)
            except SheafError as exc:
                return self._reject(cid, result.task_id, result.update_id, f"evaluation {exc}")
        return self.coordinator.settle(cid, result.task_id, result.update_id, result=result)

    def _reject(self, client_id: int, task_id: str, update_id: str, reason: str) -> tuple[str, str]:
        status, detail = self.coordinator.settle(
            client_id, task_id, update_id, failure=f"update rejected: {reason}", rejected=True
        )
        if status != "rejected":  # the task was not awaited: nothing to settle, but say why
            log_event(_log, logging.WARNING, "result_refused", client=client_id, reason=reason)
            return "rejected", reason
        return status, detail
