"""Tasks and results on the wire: a protobuf header, then the tensors' chunks.

A task (server to client) or a result (client to server) is a *stream* of messages: one
header — the task's kind, round, training settings and strategy options, or the result's
example count, metrics and failure — that also describes every tensor, followed by the
tensors' bytes in chunks (:mod:`sheaf.deploy.chunks`). A 200 MB model is 200 chunk
messages; nothing is ever unpickled.

The readers (:class:`TaskReader`, :class:`ResultReader`) check everything before they
trust anything: every message must parse and come in order (header first, then chunks);
ids, kinds, counts, scalars and metrics must be well formed; the tensors pass
:class:`~sheaf.core.errors.SheafError`-free through the chunk assembler's checks (allowed
dtypes, sizes within the limit before any buffer is allocated, exactly the declared bytes
with the declared digest — a result's header is what its client signs, so the digest
binds the tensors to the signature). Any violation is one :class:`WireError`.

A compressed update travels natively: its encoder's arrays (packed codes, ranges, a
bitmap — integer dtypes among them) in the tensor group :data:`ENCODED_GROUP` instead of
the delta (group ``""``), never decoded and re-encoded on the client; the server checks
their declared layout before it takes any bytes (:mod:`sheaf.deploy.validation`) and the
strategy's server half decodes them.

Example:
    >>> import numpy as np
    >>> from sheaf.core.params import Params
    >>> delta = Params({"w": np.ones((2, 3), np.float32)})
    >>> messages = encode_result("r1-fit-c0", "u-1", "fit", 1, num_examples=10, delta=delta)
    >>> reader = ResultReader(limit=1 << 20)
    >>> for message in messages:
    ...     reader.feed(message)
    >>> result = reader.finish()
    >>> result.delta["w"].tolist(), result.num_examples
    ([[1.0, 1.0, 1.0], [1.0, 1.0, 1.0]], 10)
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from google.protobuf.message import DecodeError

from sheaf.core.config import TrainConfig
from sheaf.core.encoded import Encoded
from sheaf.core.errors import ConfigError, SheafError
from sheaf.core.params import Params
from sheaf.core.update import MAX_EXAMPLES, Metrics, Scalar, TensorGroups, validate_metrics
from sheaf.deploy._proto import federation_pb2 as pb
from sheaf.deploy.chunks import CHUNK_BYTES, EncodedTensors, TensorAssembler, WireError, encode_tensors

__all__ = [
    "ENCODED_GROUP",
    "MAX_METRICS",
    "MAX_METRIC_NAME",
    "MAX_SECAGG_IN_RESULT",
    "PROTOCOL",
    "ReceivedResult",
    "ReceivedTask",
    "ResultReader",
    "TaskReader",
    "chunk_messages",
    "encode_result",
    "encode_task_header",
    "idle_message",
    "task_chunk",
]

#: The protocol version a client and server must share (2: a run description instead of the
#: server's config, and each client's own training seed in its tasks).
PROTOCOL = 2

#: The tensor group of a result that carries its update encoded (compression).
ENCODED_GROUP = "sheaf:encoded"

_KINDS = {pb.FIT: "fit", pb.EVALUATE: "evaluate"}
_KIND_CODES = {name: code for code, name in _KINDS.items()}
_MAX_ID = 200
_MAX_REASON = 2000
#: The most metrics one result may carry, and the longest metric name.
MAX_METRICS = 256
MAX_METRIC_NAME = 100
#: The longest secure-aggregation message a result may carry (its AdvertiseKeys: 140 bytes).
MAX_SECAGG_IN_RESULT = 256


# Scalars ------------------------------------------------------------------------------
def _scalar(value: Scalar) -> pb.Scalar:
    if isinstance(value, bool):
        return pb.Scalar(bool_value=value)
    if isinstance(value, int):
        return pb.Scalar(int_value=value)
    if isinstance(value, float):
        return pb.Scalar(float_value=value)
    if isinstance(value, str):
        return pb.Scalar(string_value=value)
    raise WireError(f"cannot send a value of type {type(value).__name__}; use bool, int, float or str")


def _named(values: Mapping[str, Scalar]) -> list[pb.NamedScalar]:
    return [pb.NamedScalar(name=name, value=_scalar(value)) for name, value in values.items()]


def _scalars(entries: Sequence[pb.NamedScalar], what: str) -> dict[str, Scalar]:
    out: dict[str, Scalar] = {}
    for entry in entries:
        if not entry.name or entry.name in out:
            raise WireError(f"{what}: empty or repeated name {entry.name!r}")
        kind = entry.value.WhichOneof("kind")
        if kind is None:
            raise WireError(f"{what}: {entry.name!r} has no value")
        out[entry.name] = getattr(entry.value, kind)
    return out


#: The most client steps a task may name.
_MAX_CLIENT_STEPS = 16


def _check_id(value: str, what: str) -> str:
    if not value or len(value) > _MAX_ID:
        raise WireError(f"{what} must be 1 to {_MAX_ID} characters, got {len(value)}")
    return value


# Tasks: server to client --------------------------------------------------------------------
def encode_task_header(
    task_id: str,
    kind: str,
    round: int,
    client_id: int,
    tensors: EncodedTensors,
    *,
    train: TrainConfig | None = None,
    options: Mapping[str, Scalar] | None = None,
    aggregated_round: int = 0,
    client_steps: Sequence[str] = (),
    seed: int = 0,
    secagg: pb.SecAggSetup | None = None,
) -> bytes:
    """The first message of a task stream; the chunks of ``tensors`` follow it.

    Client steps travel by name only; a client runs those among its own steps. ``seed`` is
    the addressed client's own training seed for the round (fits); ``secagg`` the secure
    aggregation instance its update goes through (fits).
    """
    train_values: dict[str, Scalar] = dict(vars(train)) if train is not None else {}
    task = pb.Task(
        task_id=task_id,
        kind=_KIND_CODES[kind],
        round=round,
        client_id=client_id,
        train=_named(train_values),
        options=_named(dict(options or {})),
        tensors=tensors.specs,
        total_bytes=tensors.total_bytes,
        aggregated_round=aggregated_round,
        tensors_digest=tensors.digest,
        client_steps=list(client_steps),
        seed=seed,
    )
    if secagg is not None:
        task.secagg.CopyFrom(secagg)
    return pb.TaskMessage(task=task).SerializeToString()


def task_chunk(data: bytes) -> bytes:
    """A chunk of a task stream."""
    return pb.TaskMessage(chunk=pb.Chunk(data=data)).SerializeToString()


def idle_message(retry_after: float, finished: bool = False) -> bytes:
    """The whole answer to a pull when there is no work (or the run is over)."""
    return pb.TaskMessage(idle=pb.Idle(retry_after=retry_after, finished=finished)).SerializeToString()


@dataclass(frozen=True)
class ReceivedTask:
    """A task as a client received it.

    Attributes:
        task_id: the server's id for this piece of work.
        kind: ``fit`` or ``evaluate``.
        round: the round number.
        client_id: the client it is addressed to.
        params: the global params.
        train: local training settings (fits).
        options: the strategy's per-round options (fits).
        payload: tensors the strategy sends every client of the round (fits).
        aggregated_round: the last round whose update from this client was aggregated.
        client_steps: the names of the client steps to run around training, outermost
            first (fits).
        seed: the client's own training seed for the round (fits).
        secagg: the secure-aggregation instance of a fit, as the server sent it (unchecked:
            the client checks it against its policy), or None.
    """

    task_id: str
    kind: str
    round: int
    client_id: int
    params: Params
    train: TrainConfig = field(default_factory=TrainConfig)
    options: Mapping[str, Scalar] = field(default_factory=dict)
    payload: TensorGroups = field(default_factory=dict)
    aggregated_round: int = 0
    client_steps: tuple[str, ...] = ()
    seed: int = 0
    secagg: pb.SecAggSetup | None = None


def _parse(message_type: type[Any], data: bytes, what: str) -> Any:
    message = message_type()
    try:
        message.ParseFromString(data)
    except (DecodeError, ValueError, RuntimeError) as exc:  # upb raises DecodeError; be liberal
        raise WireError(f"{what} is not a valid {message_type.__name__} message: {exc}") from None
    return message


class TaskReader:
    """Reads a pull's answer: one Idle, or a Task header followed by its chunks.

    Args:
        limit: the most tensor bytes accepted.
    """

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._header: pb.Task | None = None
        self._assembler: TensorAssembler | None = None
        self.idle: pb.Idle | None = None

    def feed(self, data: bytes) -> None:
        """Take the next message of the stream.

        Raises:
            WireError: if it does not parse or comes out of order.
        """
        message: pb.TaskMessage = _parse(pb.TaskMessage, data, "task message")
        part = message.WhichOneof("part")
        if self.idle is not None:
            raise WireError("task stream continues after an idle message")
        if part == "idle" and self._header is None:
            self.idle = message.idle
        elif part == "task" and self._header is None:
            task = message.task
            if task.kind not in _KINDS:
                raise WireError(f"task has unknown kind {task.kind}")
            self._assembler = TensorAssembler(task.tensors, task.total_bytes, task.tensors_digest, self._limit, "task")
            self._header = task
        elif part == "chunk" and self._assembler is not None:
            self._assembler.add(message.chunk.data)
        else:
            raise WireError(f"task stream has a {part or 'empty'} message out of order")

    def finish(self) -> ReceivedTask | None:
        """The task, or None if the server had no work (see :attr:`idle`).

        Raises:
            WireError: if the stream was empty or incomplete, or the task is unusable.
        """
        if self.idle is not None:
            return None
        if self._header is None or self._assembler is None:
            raise WireError("task stream ended before its header")
        header = self._header
        groups = self._assembler.finish()
        params = groups.pop("", Params({}))
        if len(header.client_steps) > _MAX_CLIENT_STEPS:
            raise WireError(f"task names {len(header.client_steps)} client steps, more than {_MAX_CLIENT_STEPS}")
        try:
            train = TrainConfig(**cast(dict[str, Any], _scalars(header.train, "train settings")))
        except (ConfigError, TypeError) as exc:
            raise WireError(f"task carries unusable train settings: {exc}") from None
        return ReceivedTask(
            _check_id(header.task_id, "task id"),
            _KINDS[header.kind],
            int(header.round),
            int(header.client_id),
            params,
            train,
            _scalars(header.options, "options"),
            groups,
            int(header.aggregated_round),
            tuple(_check_id(name, "client step name") for name in header.client_steps),
            int(header.seed),
            header.secagg if header.HasField("secagg") else None,
        )


# Results: client to server ------------------------------------------------------------------
def encode_result(
    task_id: str,
    update_id: str,
    kind: str,
    round: int,
    *,
    num_examples: int = 0,
    metrics: Metrics | None = None,
    loss: float = 0.0,
    delta: Params | None = None,
    extras: TensorGroups | None = None,
    failure: str = "",
    chunk_bytes: int = CHUNK_BYTES,
    encoded: Encoded | None = None,
    secagg: bytes = b"",
) -> list[bytes]:
    """Every message of a result stream: the header, then the tensors' chunks.

    A compressed update is sent as its ``encoded`` arrays (group :data:`ENCODED_GROUP`),
    without a delta. ``secagg`` is the client's first secure-aggregation message
    (AdvertiseKeys) for a fit whose update goes through secure aggregation (no tensors).

    Raises:
        WireError: if a tensor's dtype cannot travel or a metric is not a number.
    """
    groups: dict[str, Mapping[str, Any]] = {}
    if delta is not None:
        groups[""] = delta
    if encoded is not None:
        groups[ENCODED_GROUP] = encoded
    for name, group in (extras or {}).items():
        if not name or name == ENCODED_GROUP:
            raise WireError(f"an extras group needs a non-empty name other than {ENCODED_GROUP!r}")
        groups[name] = group
    tensors = encode_tensors(groups, chunk_bytes)
    header = pb.Result(
        task_id=task_id,
        update_id=update_id,
        kind=_KIND_CODES[kind],
        round=round,
        num_examples=num_examples,
        metrics=_named(dict(metrics or {})),
        loss=loss,
        tensors=tensors.specs,
        total_bytes=tensors.total_bytes,
        failure=failure[:_MAX_REASON],
        tensors_digest=tensors.digest,
        secagg=secagg,
    )
    messages = [pb.ResultMessage(result=header).SerializeToString()]
    messages += [pb.ResultMessage(chunk=pb.Chunk(data=c)).SerializeToString() for c in tensors.chunks]
    return messages


@dataclass(frozen=True)
class ReceivedResult:
    """A result as the server received it (structure checked, values not yet judged).

    Attributes:
        task_id: the task it answers.
        update_id: the client's id for this result; a repeat delivery carries the same.
        kind: ``fit`` or ``evaluate``.
        round: the round of the task.
        num_examples: examples trained on or evaluated.
        metrics: the numbers the client shares.
        loss: the evaluation loss (evaluations).
        delta: the update's delta (fits that succeeded, unless encoded).
        extras: further tensors beside the delta.
        failure: non-empty when the client's work failed: its reason.
        encoded: the update as its encoder sent it (compression), instead of the delta.
        wire_bytes: the bytes of every message of its stream, as they arrived (counted by
            the :class:`ResultReader` that read it).
        norm: the delta's L2 norm, once the server accepted it under the round's rule
            (None: not judged yet).
        secagg: the client's AdvertiseKeys message, in a secure-aggregation fit (at most
            :data:`MAX_SECAGG_IN_RESULT` bytes; decoded and checked by the server's protocol).
    """

    task_id: str
    update_id: str
    kind: str
    round: int
    num_examples: int = 0
    metrics: Mapping[str, float] = field(default_factory=dict)
    loss: float = 0.0
    delta: Params | None = None
    extras: TensorGroups = field(default_factory=dict)
    failure: str = ""
    encoded: Encoded | None = None
    wire_bytes: int = 0
    norm: float | None = None
    secagg: bytes = b""


class ResultReader:
    """Reads a result stream, checking the header before any tensor bytes are taken.

    After the first message, :attr:`header` is available so the server can check the
    declared tensors against the model (and refuse a wrong shape, dtype or size) before it
    receives the rest.

    Args:
        limit: the most tensor bytes accepted.
    """

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self.header: pb.Result | None = None
        self._assembler: TensorAssembler | None = None
        self._metrics: dict[str, float] = {}
        self.received_bytes = 0  # every message's bytes, as they crossed the wire: the traffic figure

    def feed(self, data: bytes) -> None:
        """Take the next message of the stream.

        Raises:
            WireError: if it does not parse, comes out of order, or the header is invalid.
        """
        self.received_bytes += len(data)
        message: pb.ResultMessage = _parse(pb.ResultMessage, data, "result message")
        part = message.WhichOneof("part")
        if part == "result" and self.header is None:
            header = message.result
            _check_id(header.task_id, "task id")
            _check_id(header.update_id, "update id")
            if header.kind not in _KINDS:
                raise WireError(f"result has unknown kind {header.kind}")
            # The header is known (and its task's share settled as rejected) even if what it
            # claims, its metrics or its tensors are refused.
            self.header = header
            if not 0 <= header.num_examples <= MAX_EXAMPLES:
                raise WireError(f"result claims {header.num_examples} examples; a result may claim 0 to {MAX_EXAMPLES}")
            if len(header.failure) > _MAX_REASON:
                raise WireError(f"a failure reason may be at most {_MAX_REASON} characters")
            if len(header.secagg) > MAX_SECAGG_IN_RESULT:
                raise WireError(
                    f"a result's secure-aggregation message may be at most {MAX_SECAGG_IN_RESULT} bytes, "
                    f"got {len(header.secagg)}"
                )
            self._metrics = _result_metrics(header.metrics)
            self._assembler = TensorAssembler(
                header.tensors, header.total_bytes, header.tensors_digest, self._limit, "result"
            )
        elif part == "chunk" and self._assembler is not None:
            self._assembler.add(message.chunk.data)
        else:
            raise WireError(f"result stream has a {part or 'empty'} message out of order")

    def finish(self) -> ReceivedResult:
        """The complete result.

        Raises:
            WireError: if the stream was empty or incomplete, or its contents are unusable.
        """
        if self.header is None or self._assembler is None:
            raise WireError("result stream ended before its header")
        header = self.header
        arrays = self._assembler.finish_arrays()
        coded = arrays.pop(ENCODED_GROUP, None)
        try:
            groups = {group: Params(tensors) for group, tensors in arrays.items()}
            encoded = None if coded is None else Encoded(coded)
        except SheafError as exc:
            raise WireError(f"result: {exc}") from None
        metrics = self._metrics
        kind = _KINDS[header.kind]
        delta = groups.pop("", None)
        if kind == "fit" and not header.failure and not header.secagg and (delta is None) == (encoded is None):
            raise WireError(
                f"a fit result without a failure must carry the delta (tensor group '') or its encoding "
                f"({ENCODED_GROUP!r}), one of them"
            )
        if kind == "evaluate" and (delta is not None or groups or encoded is not None):
            raise WireError("an evaluation result carries no tensors")
        return ReceivedResult(
            header.task_id,
            header.update_id,
            kind,
            int(header.round),
            int(header.num_examples),
            metrics,
            float(header.loss),
            delta,
            groups,
            header.failure,
            encoded,
            self.received_bytes,
            secagg=bytes(header.secagg),
        )


def _result_metrics(entries: Sequence[pb.NamedScalar]) -> dict[str, float]:
    """A result's metrics: at most :data:`MAX_METRICS`, names of at most
    :data:`MAX_METRIC_NAME` characters, every value a finite number."""
    if len(entries) > MAX_METRICS:
        raise WireError(f"result carries {len(entries)} metrics, more than the {MAX_METRICS} accepted")
    for entry in entries:
        if len(entry.name) > MAX_METRIC_NAME:
            raise WireError(f"metric name {entry.name[:40]!r}... is over {MAX_METRIC_NAME} characters")
    try:
        metrics = validate_metrics(_scalars(entries, "metrics"), source="result")
    except SheafError as exc:
        raise WireError(str(exc)) from None
    for name, value in metrics.items():
        if math.isnan(value):
            raise WireError(f"result: metric {name!r} is NaN")
    return metrics


def chunk_messages(tensors: EncodedTensors) -> Iterator[bytes]:
    """The task-stream chunk messages of ``tensors``, in order."""
    for data in tensors.chunks:
        yield task_chunk(data)
