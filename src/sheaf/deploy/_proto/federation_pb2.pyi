from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class TaskKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TASK_KIND_UNSPECIFIED: _ClassVar[TaskKind]
    FIT: _ClassVar[TaskKind]
    EVALUATE: _ClassVar[TaskKind]

class PushStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PUSH_STATUS_UNSPECIFIED: _ClassVar[PushStatus]
    ACCEPTED: _ClassVar[PushStatus]
    DUPLICATE: _ClassVar[PushStatus]
    STALE: _ClassVar[PushStatus]
    REJECTED: _ClassVar[PushStatus]
TASK_KIND_UNSPECIFIED: TaskKind
FIT: TaskKind
EVALUATE: TaskKind
PUSH_STATUS_UNSPECIFIED: PushStatus
ACCEPTED: PushStatus
DUPLICATE: PushStatus
STALE: PushStatus
REJECTED: PushStatus

class TensorSpec(_message.Message):
    __slots__ = ("group", "name", "dtype", "shape")
    GROUP_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    group: str
    name: str
    dtype: str
    shape: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, group: _Optional[str] = ..., name: _Optional[str] = ..., dtype: _Optional[str] = ..., shape: _Optional[_Iterable[int]] = ...) -> None: ...

class Scalar(_message.Message):
    __slots__ = ("bool_value", "int_value", "float_value", "string_value")
    BOOL_VALUE_FIELD_NUMBER: _ClassVar[int]
    INT_VALUE_FIELD_NUMBER: _ClassVar[int]
    FLOAT_VALUE_FIELD_NUMBER: _ClassVar[int]
    STRING_VALUE_FIELD_NUMBER: _ClassVar[int]
    bool_value: bool
    int_value: int
    float_value: float
    string_value: str
    def __init__(self, bool_value: _Optional[bool] = ..., int_value: _Optional[int] = ..., float_value: _Optional[float] = ..., string_value: _Optional[str] = ...) -> None: ...

class NamedScalar(_message.Message):
    __slots__ = ("name", "value")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    name: str
    value: Scalar
    def __init__(self, name: _Optional[str] = ..., value: _Optional[_Union[Scalar, _Mapping]] = ...) -> None: ...

class JoinRequest(_message.Message):
    __slots__ = ("protocol", "sheaf_version")
    PROTOCOL_FIELD_NUMBER: _ClassVar[int]
    SHEAF_VERSION_FIELD_NUMBER: _ClassVar[int]
    protocol: int
    sheaf_version: str
    def __init__(self, protocol: _Optional[int] = ..., sheaf_version: _Optional[str] = ...) -> None: ...

class RunDescription(_message.Message):
    __slots__ = ("dataset", "model", "hidden", "rounds", "strategy", "privacy")
    DATASET_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    HIDDEN_FIELD_NUMBER: _ClassVar[int]
    ROUNDS_FIELD_NUMBER: _ClassVar[int]
    STRATEGY_FIELD_NUMBER: _ClassVar[int]
    PRIVACY_FIELD_NUMBER: _ClassVar[int]
    dataset: str
    model: str
    hidden: _containers.RepeatedScalarFieldContainer[int]
    rounds: int
    strategy: str
    privacy: str
    def __init__(self, dataset: _Optional[str] = ..., model: _Optional[str] = ..., hidden: _Optional[_Iterable[int]] = ..., rounds: _Optional[int] = ..., strategy: _Optional[str] = ..., privacy: _Optional[str] = ...) -> None: ...

class JoinReply(_message.Message):
    __slots__ = ("protocol", "client_id", "client_name", "run_id", "heartbeat_interval", "chunk_bytes", "max_update_bytes", "run")
    PROTOCOL_FIELD_NUMBER: _ClassVar[int]
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    CLIENT_NAME_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_INTERVAL_FIELD_NUMBER: _ClassVar[int]
    CHUNK_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_UPDATE_BYTES_FIELD_NUMBER: _ClassVar[int]
    RUN_FIELD_NUMBER: _ClassVar[int]
    protocol: int
    client_id: int
    client_name: str
    run_id: str
    heartbeat_interval: float
    chunk_bytes: int
    max_update_bytes: int
    run: RunDescription
    def __init__(self, protocol: _Optional[int] = ..., client_id: _Optional[int] = ..., client_name: _Optional[str] = ..., run_id: _Optional[str] = ..., heartbeat_interval: _Optional[float] = ..., chunk_bytes: _Optional[int] = ..., max_update_bytes: _Optional[int] = ..., run: _Optional[_Union[RunDescription, _Mapping]] = ...) -> None: ...

class HeartbeatRequest(_message.Message):
    __slots__ = ("run_id",)
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    def __init__(self, run_id: _Optional[str] = ...) -> None: ...

class HeartbeatReply(_message.Message):
    __slots__ = ("finished",)
    FINISHED_FIELD_NUMBER: _ClassVar[int]
    finished: bool
    def __init__(self, finished: _Optional[bool] = ...) -> None: ...

class PullRequest(_message.Message):
    __slots__ = ("run_id", "wait_seconds")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    WAIT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    wait_seconds: float
    def __init__(self, run_id: _Optional[str] = ..., wait_seconds: _Optional[float] = ...) -> None: ...

class Task(_message.Message):
    __slots__ = ("task_id", "kind", "round", "client_id", "train", "options", "tensors", "total_bytes", "aggregated_round", "tensors_digest", "client_steps", "seed", "secagg")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    TRAIN_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    TENSORS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    AGGREGATED_ROUND_FIELD_NUMBER: _ClassVar[int]
    TENSORS_DIGEST_FIELD_NUMBER: _ClassVar[int]
    CLIENT_STEPS_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    SECAGG_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    kind: TaskKind
    round: int
    client_id: int
    train: _containers.RepeatedCompositeFieldContainer[NamedScalar]
    options: _containers.RepeatedCompositeFieldContainer[NamedScalar]
    tensors: _containers.RepeatedCompositeFieldContainer[TensorSpec]
    total_bytes: int
    aggregated_round: int
    tensors_digest: str
    client_steps: _containers.RepeatedScalarFieldContainer[str]
    seed: int
    secagg: SecAggSetup
    def __init__(self, task_id: _Optional[str] = ..., kind: _Optional[_Union[TaskKind, str]] = ..., round: _Optional[int] = ..., client_id: _Optional[int] = ..., train: _Optional[_Iterable[_Union[NamedScalar, _Mapping]]] = ..., options: _Optional[_Iterable[_Union[NamedScalar, _Mapping]]] = ..., tensors: _Optional[_Iterable[_Union[TensorSpec, _Mapping]]] = ..., total_bytes: _Optional[int] = ..., aggregated_round: _Optional[int] = ..., tensors_digest: _Optional[str] = ..., client_steps: _Optional[_Iterable[str]] = ..., seed: _Optional[int] = ..., secagg: _Optional[_Union[SecAggSetup, _Mapping]] = ...) -> None: ...

class SecAggSetup(_message.Message):
    __slots__ = ("instance", "clients", "degree", "threshold", "min_survivors", "bits", "length", "graph_seed")
    INSTANCE_FIELD_NUMBER: _ClassVar[int]
    CLIENTS_FIELD_NUMBER: _ClassVar[int]
    DEGREE_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    MIN_SURVIVORS_FIELD_NUMBER: _ClassVar[int]
    BITS_FIELD_NUMBER: _ClassVar[int]
    LENGTH_FIELD_NUMBER: _ClassVar[int]
    GRAPH_SEED_FIELD_NUMBER: _ClassVar[int]
    instance: bytes
    clients: _containers.RepeatedScalarFieldContainer[int]
    degree: int
    threshold: int
    min_survivors: int
    bits: int
    length: int
    graph_seed: int
    def __init__(self, instance: _Optional[bytes] = ..., clients: _Optional[_Iterable[int]] = ..., degree: _Optional[int] = ..., threshold: _Optional[int] = ..., min_survivors: _Optional[int] = ..., bits: _Optional[int] = ..., length: _Optional[int] = ..., graph_seed: _Optional[int] = ...) -> None: ...

class SecAggRequest(_message.Message):
    __slots__ = ("run_id", "round", "instance", "want", "message", "wait_seconds")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_FIELD_NUMBER: _ClassVar[int]
    WANT_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    WAIT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    round: int
    instance: bytes
    want: int
    message: bytes
    wait_seconds: float
    def __init__(self, run_id: _Optional[str] = ..., round: _Optional[int] = ..., instance: _Optional[bytes] = ..., want: _Optional[int] = ..., message: _Optional[bytes] = ..., wait_seconds: _Optional[float] = ...) -> None: ...

class SecAggReply(_message.Message):
    __slots__ = ("message", "over", "detail")
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    OVER_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    message: bytes
    over: bool
    detail: str
    def __init__(self, message: _Optional[bytes] = ..., over: _Optional[bool] = ..., detail: _Optional[str] = ...) -> None: ...

class Idle(_message.Message):
    __slots__ = ("retry_after", "finished")
    RETRY_AFTER_FIELD_NUMBER: _ClassVar[int]
    FINISHED_FIELD_NUMBER: _ClassVar[int]
    retry_after: float
    finished: bool
    def __init__(self, retry_after: _Optional[float] = ..., finished: _Optional[bool] = ...) -> None: ...

class Chunk(_message.Message):
    __slots__ = ("data",)
    DATA_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    def __init__(self, data: _Optional[bytes] = ...) -> None: ...

class TaskMessage(_message.Message):
    __slots__ = ("task", "chunk", "idle")
    TASK_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    IDLE_FIELD_NUMBER: _ClassVar[int]
    task: Task
    chunk: Chunk
    idle: Idle
    def __init__(self, task: _Optional[_Union[Task, _Mapping]] = ..., chunk: _Optional[_Union[Chunk, _Mapping]] = ..., idle: _Optional[_Union[Idle, _Mapping]] = ...) -> None: ...

class Result(_message.Message):
    __slots__ = ("task_id", "update_id", "kind", "round", "num_examples", "metrics", "loss", "tensors", "total_bytes", "failure", "tensors_digest", "secagg")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    UPDATE_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    NUM_EXAMPLES_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    LOSS_FIELD_NUMBER: _ClassVar[int]
    TENSORS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    FAILURE_FIELD_NUMBER: _ClassVar[int]
    TENSORS_DIGEST_FIELD_NUMBER: _ClassVar[int]
    SECAGG_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    update_id: str
    kind: TaskKind
    round: int
    num_examples: int
    metrics: _containers.RepeatedCompositeFieldContainer[NamedScalar]
    loss: float
    tensors: _containers.RepeatedCompositeFieldContainer[TensorSpec]
    total_bytes: int
    failure: str
    tensors_digest: str
    secagg: bytes
    def __init__(self, task_id: _Optional[str] = ..., update_id: _Optional[str] = ..., kind: _Optional[_Union[TaskKind, str]] = ..., round: _Optional[int] = ..., num_examples: _Optional[int] = ..., metrics: _Optional[_Iterable[_Union[NamedScalar, _Mapping]]] = ..., loss: _Optional[float] = ..., tensors: _Optional[_Iterable[_Union[TensorSpec, _Mapping]]] = ..., total_bytes: _Optional[int] = ..., failure: _Optional[str] = ..., tensors_digest: _Optional[str] = ..., secagg: _Optional[bytes] = ...) -> None: ...

class ResultMessage(_message.Message):
    __slots__ = ("result", "chunk")
    RESULT_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    result: Result
    chunk: Chunk
    def __init__(self, result: _Optional[_Union[Result, _Mapping]] = ..., chunk: _Optional[_Union[Chunk, _Mapping]] = ...) -> None: ...

class PushReply(_message.Message):
    __slots__ = ("status", "detail")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    status: PushStatus
    detail: str
    def __init__(self, status: _Optional[_Union[PushStatus, str]] = ..., detail: _Optional[str] = ...) -> None: ...
