"""``sheaf server``: run a federated training over the network, durably.

The server holds the run config and the run store, and no data. It:

1. reads the authorised clients (their ids are the population: cohorts are sampled from
   them by (seed, round) alone, exactly as in simulation);
2. builds the task and the strategy, and opens the run store — or *resumes* it: a server
   killed at any moment and started again with the same command continues after the
   last committed round, with the stored params and strategy state;
3. listens (TLS unless ``insecure``), waits until ``strategy.min_clients`` clients are
   connected, then runs the **same round loop as a simulation**
   (:func:`sheaf.run.run_rounds`) with a :class:`~sheaf.deploy.backend.DeploymentBackend`;
4. about once a second writes its live status (connected clients, the batch in
   progress) into the store for ``sheaf status``; logs every event as a structured line;
5. when the last round is committed, tells clients the run is over and stops.

Example:
    >>> from sheaf.core.config import RunConfig
    >>> server_run_path(RunConfig()).as_posix()
    'runs/digits-fedavg-server.sqlite'
"""

from __future__ import annotations

import asyncio
import ctypes
import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import grpc
import grpc.aio

from sheaf.core.config import RunConfig
from sheaf.core.errors import ConfigError
from sheaf.core.params import Params
from sheaf.deploy.auth import RequestVerifier, load_authorized_clients
from sheaf.deploy.backend import DeploymentBackend
from sheaf.deploy.coordinator import Coordinator
from sheaf.deploy.local import catalog_info, deployment_task, load_test_data
from sheaf.deploy.logs import log_event
from sheaf.deploy.service import FederationService, ServiceSettings
from sheaf.deploy.transport import server_credentials, server_options
from sheaf.evaluation.history import History, RoundRecord
from sheaf.run.assemble import assemble, open_or_create_store
from sheaf.run.loop import Federated, RoundListener, run_rounds
from sheaf.run.population import Population
from sheaf.strategies.base import Strategy

__all__ = ["ServerOptions", "ServerResult", "limit_malloc_arenas", "run_server", "server_run_path"]

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
        insecure: plaintext instead of TLS (experiments on one machine only).
        task: ``module:attr`` of the task, overriding the config's.
        test_data: an optional held-out file for central evaluation on the server.
        label: the label column of ``test_data`` if it is a CSV/Parquet outside the catalog.
        run_path: the run store; default ``runs_dir/<name>.sqlite``.
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

    def files(self) -> tuple[Path | None, Path | None, Path]:
        """The certificate, key and authorised-clients paths (cert and key None if insecure).

        Raises:
            ConfigError: if a needed file is not given.
        """
        folder = self.keys
        cert = self.cert or (folder / "server.pem" if folder else None)
        key = self.key or (folder / "server.key" if folder else None)
        authorized = self.authorized or (folder / "authorized_clients" if folder else None)
        if authorized is None:
            raise ConfigError("the server needs its authorised clients: pass --keys DIR (from 'sheaf keys init')")
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
        port: the port it listened on.
    """

    history: History
    params: Params
    run_path: Path
    port: int


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


class _GrpcThread:
    """The asyncio gRPC server, on its own thread and event loop."""

    def __init__(self, service: FederationService, address: str, credentials: grpc.ServerCredentials | None) -> None:
        self.service = service
        self.address = address
        self.credentials = credentials
        self.port = 0
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), name="sheaf-grpc", daemon=True)

    def start(self) -> int:
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            raise ConfigError(f"cannot listen on {self.address}: {self._error}; is the port in use?") from None
        return self.port

    async def _main(self) -> None:
        try:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            self.service.bind(self._loop)
            server = grpc.aio.server(options=server_options())
            server.add_generic_rpc_handlers((self.service.handler(),))
            if self.credentials is None:
                self.port = server.add_insecure_port(self.address)
            else:
                self.port = server.add_secure_port(self.address, self.credentials)
            if self.port == 0:
                raise RuntimeError("address could not be bound")
            await server.start()
        except Exception as exc:  # reported to the starting thread as one clear error
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        await self._stop.wait()
        await server.stop(grace=1.0)

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(timeout=10)


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
) -> ServerResult:
    """Serve the run until its last round is committed (see the module docstring).

    Args:
        config: the run's config (rounds, strategy, ``[server]`` timeouts, seed, ...).
        options: address, keys, task, test data, run store.
        strategy: use this strategy instead of ``config.strategy.name``.
        listener: receives the round loop's progress.

    Raises:
        SheafError: on any invalid setting, key file, task or store (one clear message).
    """
    limit_malloc_arenas()
    cert, key, authorized_path = options.files()
    authorized = load_authorized_clients(authorized_path)
    names = {client.client_id: client.name for client in authorized.values()}
    ids = tuple(sorted(names))
    credentials = server_credentials(cert, key) if cert is not None and key is not None else None
    task = deployment_task(config, options.task)
    central = None
    if options.test_data is not None:
        info = catalog_info(config.data.dataset)
        central = load_test_data(options.test_data, config, label=options.label, info=info)
    parts = assemble(config, population=len(ids), task=task, strategy=strategy, deployed=True)
    chosen, initial = parts.strategy, parts.initial
    path = options.run_path or server_run_path(config)
    meta = {
        **parts.meta,
        "dataset": config.data.dataset,
        "backend": "grpc",
        "client_ids": list(ids),
        "client_names": [names[i] for i in ids],
        "run_id": uuid.uuid4().hex[:16],
    }
    store = open_or_create_store(path, config, initial, chosen.init(initial), meta)
    started = time.time()
    grpc_thread: _GrpcThread | None = None
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
        coordinator = Coordinator(names, config.server)

        def write_status() -> None:
            store.set_meta(
                "server",
                {
                    "state": state,
                    "pid": os.getpid(),
                    "address": options.address.rsplit(":", 1)[0] + f":{grpc_thread.port if grpc_thread else 0}",
                    "tls": credentials is not None,
                    "started": started,
                    "updated": time.time(),
                    **coordinator.snapshot(),
                },
            )

        coordinator.on_tick = write_status
        settings = ServiceSettings(
            run_id,
            json.dumps(config.to_dict()),
            config.server.heartbeat_interval,
            max_update_bytes,
            config.server.max_update_norm,
        )
        grpc_thread = _GrpcThread(
            FederationService(coordinator, RequestVerifier(authorized), settings), options.address, credentials
        )
        port = grpc_thread.start()
        log_event(
            _log, logging.INFO, "listening", address=options.address, port=port, tls=credentials is not None,
            run=str(path), run_id=run_id, last_round=store.last_round, rounds=config.rounds, clients=len(ids),
        )  # fmt: skip
        if store.last_round < config.rounds:
            state = "waiting_for_clients"
            write_status()
            coordinator.wait_for_clients(config.strategy.min_clients)
            state = "running"
            write_status()
            backend = DeploymentBackend(coordinator, store)
            federated = Federated(
                config, parts.task, Population(ids, ids, central), chosen, backend, store, parts.limits
            )
            history, params = run_rounds(federated, _LogListener(listener, coordinator, write_status))
        else:
            history, params = store.history(), store.params()
            log_event(_log, logging.INFO, "already_finished", rounds=store.last_round)
        store.set_meta("status", "finished")
        state = "finished"
        coordinator.finish()
        write_status()
        log_event(
            _log, logging.INFO, "run_finished", rounds=history.rounds_completed, central=dict(history.final_central)
        )
        # Let connected clients hear that the run is over before the port closes.
        time.sleep(min(config.server.heartbeat_interval + 0.5, 5.0))
        return ServerResult(history, params, path, port)
    finally:
        if state != "finished":
            try:
                state = "stopped"
                store.set_meta("server", {**store.meta.get("server", {}), "state": "stopped", "updated": time.time()})
            except Exception:  # the store itself may be what failed; stopping matters more
                pass
        if grpc_thread is not None:
            grpc_thread.stop()
        store.close()
