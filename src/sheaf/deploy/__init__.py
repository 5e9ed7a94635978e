"""Deployment: one ``sheaf server`` and many ``sheaf client`` processes over gRPC.

The same task and strategy code as simulation; only the backend differs
(:class:`DeploymentBackend`). Tensors travel as raw bytes in chunks (:mod:`.chunks`,
:mod:`.wire`), never pickled; every client request is signed with the client's own key
(:mod:`.auth`) over TLS (:mod:`.keys`, :mod:`.transport`); every update is checked before
aggregation (:mod:`.validation`); the server's state is its run store, so a killed server
resumes where it stopped (:mod:`.server`); clients reconnect with backoff and keep their
own state (:mod:`.client`, :mod:`.client_state`). A client is told only what it needs about
the run (:mod:`.description`), and decides everything at stake for its data itself: its
owner's policy (:mod:`.policy`), checked on every task (:mod:`.client_work`), and its own
durable ledger (:mod:`.client_ledger`). Imported lazily by the CLI: ``import sheaf`` does
not load gRPC.

Calls travel through one seam (:mod:`.rpc`): gRPC carries them in a deployment
(:mod:`.transport`); :class:`InProcessTransport` carries them within one process, so a
whole deployment — server, coordinator, auth, wire, clients — runs in a test without
sockets (:mod:`.inprocess`, :mod:`.inprocess_channel`).
"""

from sheaf.deploy.async_ledger import AsyncLedger
from sheaf.deploy.auth import (
    AuthError,
    AuthorizedClient,
    BodyDigest,
    ClientIdentity,
    RequestVerifier,
    authorized_line,
    key_id,
    load_authorized_clients,
    load_identity,
)
from sheaf.deploy.backend import DeploymentBackend, task_id
from sheaf.deploy.buffered import BufferedServer
from sheaf.deploy.chunks import (
    CHUNK_BYTES,
    MAX_MESSAGE_BYTES,
    EncodedTensors,
    TensorAssembler,
    WireError,
    encode_tensors,
    tensor_digest,
)
from sheaf.deploy.client import ClientOptions, DeployedClient, checked_run_id, run_client
from sheaf.deploy.client_ledger import ClientLedger
from sheaf.deploy.client_state import ClientStateFile
from sheaf.deploy.client_work import PRIVACY_STEP_NAMES, ClientWork, task_digest
from sheaf.deploy.contacts import Contacts
from sheaf.deploy.coordinator import Coordinator
from sheaf.deploy.description import DescriptionError, RunDescription
from sheaf.deploy.inprocess import InProcessTransport
from sheaf.deploy.inprocess_channel import InProcessChannel
from sheaf.deploy.keys import KeySet, init_keys, new_client_key
from sheaf.deploy.local import catalog_info, client_task, deployment_task, load_client_data, load_test_data
from sheaf.deploy.logs import configure_logging, log_event
from sheaf.deploy.plaintext import PLAINTEXT_WARNING, check_plaintext, is_loopback
from sheaf.deploy.policy import (
    DP_REQUIREMENTS,
    EVALUATION_SHARING,
    ClientPolicy,
    DataPolicy,
    PrivacyPolicy,
    SecAggPolicy,
    SharingPolicy,
    TrainingPolicy,
    load_policy,
)
from sheaf.deploy.quorum import wait_for_quorum
from sheaf.deploy.replay import SeenNonces
from sheaf.deploy.rpc import (
    CallContext,
    Channel,
    Connector,
    Handlers,
    Listening,
    Metadata,
    Requests,
    RpcError,
    ServerTransport,
    Service,
    StatusCode,
)
from sheaf.deploy.secagg_exchange import STAGE_MESSAGES, SecAggExchange, max_client_bytes, max_server_bytes
from sheaf.deploy.secure_round import SecureRound, run_secure_round, stage_seconds
from sheaf.deploy.server import (
    SECRET_META,
    ServerOptions,
    ServerResult,
    limit_malloc_arenas,
    run_server,
    server_run_path,
    stored_secret,
)
from sheaf.deploy.service import FederationService, ServiceSettings
from sheaf.deploy.status import run_status
from sheaf.deploy.streams import ResultStreams, StreamBusy, StreamClaim
from sheaf.deploy.throttle import RefusalLog, peer_host
from sheaf.deploy.transport import (
    METHODS,
    SERVICE_NAME,
    GrpcChannel,
    GrpcServerTransport,
    client_channel,
    client_options,
    grpc_handler,
    server_credentials,
    server_options,
)
from sheaf.deploy.validation import declared_problem, value_problem
from sheaf.deploy.wire import (
    ENCODED_GROUP,
    MAX_METRIC_NAME,
    MAX_METRICS,
    MAX_SECAGG_IN_RESULT,
    PROTOCOL,
    ReceivedResult,
    ReceivedTask,
    ResultReader,
    TaskReader,
    chunk_messages,
    encode_result,
    encode_task_header,
    idle_message,
    task_chunk,
)
from sheaf.deploy.work import Slot, Work, WorkOutcome

__all__ = [
    "CHUNK_BYTES",
    "DP_REQUIREMENTS",
    "ENCODED_GROUP",
    "EVALUATION_SHARING",
    "MAX_MESSAGE_BYTES",
    "MAX_METRICS",
    "MAX_METRIC_NAME",
    "MAX_SECAGG_IN_RESULT",
    "METHODS",
    "PLAINTEXT_WARNING",
    "PRIVACY_STEP_NAMES",
    "PROTOCOL",
    "SECRET_META",
    "SERVICE_NAME",
    "STAGE_MESSAGES",
    "AsyncLedger",
    "AuthError",
    "AuthorizedClient",
    "BodyDigest",
    "BufferedServer",
    "CallContext",
    "Channel",
    "ClientIdentity",
    "ClientLedger",
    "ClientOptions",
    "ClientPolicy",
    "ClientStateFile",
    "ClientWork",
    "Connector",
    "Contacts",
    "Coordinator",
    "DataPolicy",
    "DeployedClient",
    "DeploymentBackend",
    "DescriptionError",
    "EncodedTensors",
    "FederationService",
    "GrpcChannel",
    "GrpcServerTransport",
    "Handlers",
    "InProcessChannel",
    "InProcessTransport",
    "KeySet",
    "Listening",
    "Metadata",
    "PrivacyPolicy",
    "ReceivedResult",
    "ReceivedTask",
    "RefusalLog",
    "RequestVerifier",
    "Requests",
    "ResultReader",
    "ResultStreams",
    "RpcError",
    "RunDescription",
    "SecAggExchange",
    "SecAggPolicy",
    "SecureRound",
    "SeenNonces",
    "ServerOptions",
    "ServerResult",
    "ServerTransport",
    "Service",
    "ServiceSettings",
    "SharingPolicy",
    "Slot",
    "StatusCode",
    "StreamBusy",
    "StreamClaim",
    "TaskReader",
    "TensorAssembler",
    "TrainingPolicy",
    "WireError",
    "Work",
    "WorkOutcome",
    "authorized_line",
    "catalog_info",
    "check_plaintext",
    "checked_run_id",
    "chunk_messages",
    "client_channel",
    "client_options",
    "client_task",
    "configure_logging",
    "declared_problem",
    "deployment_task",
    "encode_result",
    "encode_task_header",
    "encode_tensors",
    "grpc_handler",
    "idle_message",
    "init_keys",
    "is_loopback",
    "key_id",
    "limit_malloc_arenas",
    "load_authorized_clients",
    "load_client_data",
    "load_identity",
    "load_policy",
    "load_test_data",
    "log_event",
    "max_client_bytes",
    "max_server_bytes",
    "new_client_key",
    "peer_host",
    "run_client",
    "run_secure_round",
    "run_server",
    "run_status",
    "server_credentials",
    "server_options",
    "server_run_path",
    "stage_seconds",
    "stored_secret",
    "task_chunk",
    "task_digest",
    "task_id",
    "tensor_digest",
    "value_problem",
    "wait_for_quorum",
]
