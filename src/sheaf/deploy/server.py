"""``sheaf server``: run a federated training over the network, durably.

The server holds the run config and the run store, and no data. It:

1. reads the authorised clients (their ids are the population: cohorts are sampled from
   them by (run secret, round) alone — a secret from the operating system's CSPRNG,
   created with the run and kept in its run store, never sent — so no client can tell
   who else trains, and a resumed run samples as an uninterrupted one);
2. builds the task and the strategy, and opens the run store — or *resumes* it: a server
   killed at any moment and started again with the same command continues after the
   last committed round, with the stored params, strategy state and run secret;
3. listens (TLS unless ``insecure``; or serves through the transport it is given, e.g.
   :class:`~sheaf.deploy.inprocess.InProcessTransport` for a whole deployment in one
   process), waits until ``strategy.min_clients`` clients are connected, then runs the
   **same round loop as a simulation**
   (:func:`sheaf.run.run_rounds`) with a :class:`~sheaf.deploy.backend.DeploymentBackend` —
   or, with ``[asynchronous]``, FedBuff (:mod:`sheaf.deploy.buffered`): clients pull when
   ready and the server steps every K results;
4. about once a second writes its live status (connected clients, the batch in
   progress) into the store for ``sheaf status``; logs every event as a structured line;
5. when the last round is committed, tells clients the run is over and stops.

Example:
    >>> from sheaf.core.config import RunConfig
    >>> server_run_path(RunConfig()).as_posix()
    'runs/digits-fedavg-server.sqlite'
"""

from __future__ import annotations

import ctypes
import logging
import math
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sheaf.core.config import RunConfig
from sheaf.core.errors import ConfigError, StoreError
from sheaf.core.keyed import SECRET_BYTES, new_secret
from sheaf.core.params import Params
from sheaf.deploy.async_ledger import AsyncLedger
from sheaf.deploy.auth import RequestVerifier, load_authorized_clients
from sheaf.deploy.backend import DeploymentBackend
from sheaf.deploy.buffered import BufferedServer
from sheaf.deploy.chunks import MAX_MESSAGE_BYTES
from sheaf.deploy.coordinator import Coordinator
from sheaf.deploy.description import RunDescription
from sheaf.deploy.local import catalog_info, deployment_task, load_test_data
from sheaf.deploy.logs import log_event
from sheaf.deploy.plaintext import check_plaintext
from sheaf.deploy.replay import SeenNonces
from sheaf.deploy.rpc import Listening, ServerTransport
from sheaf.deploy.service import FederationService, ServiceSettings
from sheaf.deploy.transport import GrpcServerTransport, server_credentials
from sheaf.evaluation.history import History, RoundRecord
from sheaf.run.assemble import assemble, open_or_create_store
from sheaf.run.loop import Federated, RoundListener, run_rounds
from sheaf.run.population import Population
from sheaf.run.store import RunStore
from sheaf.secagg.plan import SecAggPlan
from sheaf.strategies.base import Strategy

__all__ = [
    "SECRET_META",
    "ServerOptions",
    "ServerResult",
    "limit_malloc_arenas",
    "run_server",
    "server_run_path",
    "stored_secret",
]

_log = logging.getLogger("sheaf.server")


@dataclass(frozen=True)
class ServerOptions:
    """Where the server listens and where its keys are (the run itself is the config).

    Attributes:
        address: ``host:port`` to listen on (port 0 picks a free one).
        keys: a folder made by ``sheaf keys init`` (server.pem, server.key,
            authorized_clients); the three paths below override its parts.
        cert: the server's TLS certificate.
        key: the server's TLS private key.
        authorized: the authorised clients file.
        insecure: plaintext instead of TLS (experiments on one machine only; refused on a
            non-loopback address unless ``insecure_non_loopback``).
        task: ``module:attr`` of the task, overriding the config's.
        test_data: an optional held-out file for central evaluation on the server.
        label: the label column of ``test_data`` if it is a CSV/Parquet outside the catalog.
        run_path: the run store; default ``runs_dir/<name>.sqlite``.
        insecure_non_loopback: allow ``insecure`` on an address other than loopback.
    """

    address: str = "0.0.0.0:7443"
    keys: Path | None = None
    cert: Path | None = None
    key: Path | None = None
    authorized: Path | None = None
    insecure: bool = False
    task: str = ""
    test_data: Path | None = None
    label: str = "label"
    run_path: Path | None = None
    insecure_non_loopback: bool = False

    def authorized_file(self) -> Path:
        """The authorised-clients path.

        Raises:
            ConfigError: if it is not given.
        """
        folder = self.keys
        authorized = self.authorized or (folder / "authorized_clients" if folder else None)
        if authorized is None:
            raise ConfigError("the server needs its authorised clients: pass --keys DIR (from 'sheaf keys init')")
        return authorized

    def files(self) -> tuple[Path | None, Path | None, Path]:
        """The certificate, key and authorised-clients paths (cert and key None if insecure).

        Raises:
            ConfigError: if a needed file is not given.
        """
        folder = self.keys
        cert = self.cert or (folder / "server.pem" if folder else None)
        key = self.key or (folder / "server.key" if folder else None)
        authorized = self.authorized_file()
        if self.insecure:
            return None, None, authorized
        if cert is None or key is None:
            raise ConfigError("TLS needs the server's certificate and key: pass --keys DIR, or --insecure")
        return cert, key, authorized


@dataclass(frozen=True)
class ServerResult:
    """What a finished server run produced.

    Attributes:
        history: every round's record.
        params: the final global params.
        run_path: the run store.
        port: the port it listened on (0 for a transport without sockets).
    """

    history: History
    params: Params
    run_path: Path
    port: int

    @property
    def skipped_rounds(self) -> tuple[int, ...]:
        """The rounds that were not aggregated (too few updates, a refused aggregate, ...)."""
        return tuple(record.round for record in self.history if not record.aggregated)


def limit_malloc_arenas(arenas: int = 2) -> bool:
    """Cap glibc's malloc arenas (``M_ARENA_MAX``); returns whether it applied.

    glibc gives threads that allocate at once their own arenas, and a server's gRPC, event
    loop and round-loop threads all churn megabyte-sized buffers: with 40 clients of a 4 MB
    model the server's peak memory fell from 557 to 499 MB at two arenas, at the same speed
    (``benchmarks/server_load.py --clients 40 --processes 2``). Elsewhere it does nothing.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(-8, arenas))  # -8 is M_ARENA_MAX in glibc's malloc.h
    except (OSError, AttributeError):
        return False


def server_run_path(config: RunConfig) -> Path:
    """The run store a server uses: ``runs_dir/<name>.sqlite``, by default
    ``<dataset>-<strategy>-server`` — a fixed name, so a restarted server finds its run."""
    name = config.name or f"{config.data.dataset}-{config.strategy.name}-server"
    return Path(config.runs_dir) / f"{name}.sqlite"


def _check_secagg_fits(plan: SecAggPlan) -> None:
    """A deployed masked input travels in one message: refuse a model too large for one.

    Raises:
        ConfigError: saying how many ring elements fit.
    """
    width = math.ceil(plan.bits / 8)
    limit = (MAX_MESSAGE_BYTES - (1 << 16)) // width
    if plan.quantizer().ring_length > limit:
        raise ConfigError(
            f"a deployed masked input travels in one message: at most {limit:,} ring elements at "
            f"secagg.bits={plan.bits}, this model needs {plan.quantizer().ring_length:,}; use a smaller model or "
            "fewer secagg.bits"
        )


#: The run store's meta entry holding the run secret (hex).
SECRET_META = "run_secret"


def stored_secret(path: Path) -> bytes | None:
    """The run secret of the run store at ``path`` (None: no store there yet, or none kept).

    Raises:
        StoreError: if the store cannot be read or holds a malformed secret.
    """
    if not path.exists():
        return None
    with RunStore.open(path, readonly=True) as store:
        value = store.meta.get(SECRET_META)
    if value is None:
        return None
    try:
        secret = bytes.fromhex(str(value))
    except ValueError:
        secret = b""
    if len(secret) != SECRET_BYTES:
        raise StoreError(f"run {str(path)!r} holds a malformed {SECRET_META}; the run cannot resume with its cohorts")
    return secret


class _LogListener:
    """Logs the round loop's progress, refreshes the live status, passes progress on."""

    def __init__(self, then: RoundListener | None, coordinator: Coordinator, refresh: Callable[[], None]) -> None:
        self.then = then
        self.coordinator = coordinator
        self.refresh = refresh
        self._traffic = coordinator.traffic

    def on_start(self, config: RunConfig, first_round: int, cohort: int, population: int) -> None:
        log_event(
            _log, logging.INFO, "run_started", first_round=first_round, rounds=config.rounds, cohort=cohort,
            population=population,
        )  # fmt: skip
        if self.then is not None:
            self.then.on_start(config, first_round, cohort, population)

    def on_round(self, record: RoundRecord) -> None:
        if not record.aggregated:  # the model did not move this round: the operator should know
            log_event(_log, logging.WARNING, "round_skipped", round=record.round, reason=record.note)
        federated = {name: summary.get("weighted_mean") for name, summary in record.federated.items()}
        traffic, before = self.coordinator.traffic, self._traffic
        self._traffic = traffic
        privacy = {key: record.privacy[key] for key in ("epsilon", "delta") if key in record.privacy}
        log_event(
            _log, logging.INFO, "round_done", round=record.round, completed=record.completed, failed=record.failed,
            aggregated=record.aggregated, central=dict(record.central), federated=federated,
            train_loss=record.fit.get("train_loss"), seconds=record.seconds,
            bytes_sent=traffic["sent"] - before["sent"], bytes_received=traffic["received"] - before["received"],
            **privacy,
        )  # fmt: skip
        self.refresh()
        if self.then is not None:
            self.then.on_round(record)


def run_server(
    config: RunConfig,
    options: ServerOptions,
    *,
    strategy: Strategy | None = None,
    listener: RoundListener | None = None,
    transport: ServerTransport | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> ServerResult:
    """Serve the run until its last round is committed (see the module docstring).

    Args:
        config: the run's config (rounds, strategy, ``[server]`` timeouts, seed, ...).
        options: address, keys, task, test data, run store.
        strategy: use this strategy instead of ``config.strategy.name``.
        listener: receives the round loop's progress.
        transport: carries the clients' calls; default gRPC on ``options.address`` (TLS
            unless ``options.insecure``). With another transport (e.g.
            :class:`~sheaf.deploy.inprocess.InProcessTransport`) the address and TLS
            files are not used.
        clock: monotonic seconds for the heartbeat and round timeouts (tests move a
            manual clock on instead of waiting).

    Raises:
        SheafError: on any invalid setting, key file, task or store (one clear message).
    """
    limit_malloc_arenas()
    if transport is None:
        if options.insecure:
            warning = check_plaintext(options.address, role="server", allow_non_loopback=options.insecure_non_loopback)
            log_event(_log, logging.WARNING, "plaintext", address=options.address, warning=warning)
        cert, key, authorized_path = options.files()
        credentials = server_credentials(cert, key) if cert is not None and key is not None else None
        transport = GrpcServerTransport(options.address, credentials)
    else:
        authorized_path = options.authorized_file()
    authorized = load_authorized_clients(authorized_path)
    names = {client.client_id: client.name for client in authorized.values()}
    ids = tuple(sorted(names))
    task = deployment_task(config, options.task)
    central = None
    if options.test_data is not None:
        info = catalog_info(config.data.dataset)
        central = load_test_data(options.test_data, config, label=options.label, info=info)
    # What the operator declared per client bounds its weight, beside server.max_examples.
    caps = {c.client_id: c.max_examples for c in authorized.values() if c.max_examples is not None}
    path = options.run_path or server_run_path(config)
    kept = stored_secret(path)
    secret = kept or new_secret()
    parts = assemble(
        config, population=len(ids), task=task, strategy=strategy, deployed=True, secret=secret, weight_caps=caps
    )
    chosen, initial = parts.strategy, parts.initial
    if parts.secagg is not None:
        _check_secagg_fits(parts.secagg)
    meta = {
        **parts.meta,
        "dataset": config.data.dataset,
        "backend": "grpc",
        "client_ids": list(ids),
        "client_names": [names[i] for i in ids],
        "run_id": uuid.uuid4().hex[:16],
        SECRET_META: secret.hex(),
    }
    store = open_or_create_store(path, config, initial, chosen.init(initial), meta)
    if kept is None and store.meta.get(SECRET_META) != secret.hex():  # a run stored before runs had secrets
        store.set_meta(SECRET_META, secret.hex())
        log_event(
            _log, logging.WARNING, "secret_created", run=str(path),
            note="this run had no secret: its cohorts from now on differ from an uninterrupted run's",
        )  # fmt: skip
    started = time.time()
    listening: Listening | None = None
    nonces: SeenNonces | None = None
    service: FederationService | None = None
    ledger: AsyncLedger | None = None
    state = "starting"
    try:
        stored = store.meta
        run_id = str(stored["run_id"])
        if stored.get("client_ids", list(ids)) != list(ids):
            log_event(
                _log, logging.WARNING, "population_changed", before=stored.get("client_ids"), now=list(ids),
                note="cohorts from now on differ from an uninterrupted run's",
            )  # fmt: skip
        max_update_bytes = int(config.server.max_update_mb * (1 << 20)) or 2 * initial.nbytes + (1 << 20)
        coordinator = Coordinator(names, config.server, clock=clock)

        def write_status() -> None:
            store.set_meta(
                "server",
                {
                    "state": state,
                    "pid": os.getpid(),
                    "address": listening.address if listening else options.address,
                    "tls": listening.tls if listening else False,
                    "started": started,
                    "updated": time.time(),
                    **coordinator.snapshot(),
                },
            )

        coordinator.on_tick = write_status
        settings = ServiceSettings(
            run_id,
            RunDescription.of(config).to_proto(),
            config.server.heartbeat_interval,
            max_update_bytes,
            receive_timeout=config.server.heartbeat_timeout,  # a stream as quiet as a lost client is given up
        )
        # Nonces of verified requests are written to the store before they are answered, so a
        # request captured before a restart (kill -9 included) is still refused as a replay.
        nonces = SeenNonces(path)
        verifier = RequestVerifier(authorized, seen=nonces.live(), remember=nonces.remember)
        service = FederationService(coordinator, verifier, settings)
        listening = transport.start(service)
        log_event(
            _log, logging.INFO, "listening", address=listening.address, port=listening.port, tls=listening.tls,
            run=str(path), run_id=run_id, last_round=store.last_round, rounds=config.rounds, clients=len(ids),
        )  # fmt: skip
        if store.last_round < config.rounds:
            state = "waiting_for_clients"
            write_status()
            coordinator.wait_for_clients(config.strategy.min_clients)
            state = "running"
            write_status()
            backend = DeploymentBackend(
                coordinator,
                store,
                parts.limits,
                seed=config.seed,
                min_clients=config.strategy.min_clients,
                min_clients_wait=config.server.min_clients_wait,
                secagg=parts.secagg,
            )
            population = Population(ids, ids, central, secret=secret)  # cohorts from the secret, not the seed
            federated = Federated(config, parts.task, population, chosen, backend, store, parts.limits)
            progress = _LogListener(listener, coordinator, write_status)
            if config.asynchronous.enabled:  # FedBuff: clients pull when ready, a step every K results
                ledger = AsyncLedger(path)
                history, params = BufferedServer(federated, coordinator, ledger).run(progress)
            else:
                history, params = run_rounds(federated, progress)
        else:
            history, params = store.history(), store.params()
            log_event(_log, logging.INFO, "already_finished", rounds=store.last_round)
        store.set_meta("status", "finished")
        state = "finished"
        coordinator.finish()
        write_status()
        skipped = [record.round for record in history if not record.aggregated]
        log_event(
            _log, logging.WARNING if skipped else logging.INFO, "run_finished", rounds=history.rounds_completed,
            skipped_rounds=skipped, central=dict(history.final_central),
        )  # fmt: skip
        # Let connected clients hear that the run is over before the port closes.
        transport.linger(min(config.server.heartbeat_interval + 0.5, 5.0))
        return ServerResult(history, params, path, listening.port)
    finally:
        if state != "finished":
            try:
                state = "stopped"
                store.set_meta("server", {**store.meta.get("server", {}), "state": "stopped", "updated": time.time()})
            except Exception:  # the store itself may be what failed; stopping matters more
                pass
        transport.stop()
        if service is not None:
            service.close()
        if nonces is not None:
            nonces.close()
        if ledger is not None:
            ledger.close()
        store.close()
