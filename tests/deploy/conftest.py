"""Fixtures for deployment tests: keys, client data files, servers, clients, a manual clock.

Most tests run a whole deployment in this process with no sockets: ``run_server`` on a
thread serving through an :class:`~sheaf.deploy.inprocess.InProcessTransport` (the
``transport`` fixture), and :class:`~sheaf.deploy.client.DeployedClient` s on the
transport's event loop. The same helpers run the real gRPC server on loopback instead
(``start_server(..., transport=None)``, ``start_client(port, ...)``), and
:class:`Processes` starts the real ``sheaf server`` / ``sheaf client`` commands as
subprocesses and always kills them at the end of the test.

Timeouts are tested without waiting for them: the server's coordinator reads a
:class:`ManualClock`, and :func:`let_time_pass` moves it on while the clients that should
stay in touch keep calling.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from sheaf.backends.inline import InlineBackend
from sheaf.core.config import RunConfig, load_config
from sheaf.data.catalog import build_federation
from sheaf.deploy.auth import KEY_HEADER, load_identity
from sheaf.deploy.client import ClientOptions, DeployedClient
from sheaf.deploy.inprocess import InProcessTransport
from sheaf.deploy.keys import KeySet, init_keys
from sheaf.deploy.rpc import Connector, Metadata
from sheaf.deploy.server import ServerOptions, ServerResult, run_server
from sheaf.evaluation.history import RoundRecord
from sheaf.run.loop import RoundListener
from sheaf.run.simulate import SimulationResult, simulate
from sheaf.strategies.base import Strategy

ROOT = Path(__file__).resolve().parents[2]

#: A small fast deployed run: 4 IID digits clients, a NumPy softmax task, short timeouts.
DEPLOY = [
    "clients=4",
    "partition=iid",
    "fraction=1",
    "min_clients=3",
    "rounds=5",
    "evaluation.interval=2",
    "epochs=1",
    "lr=0.5",
    "task=tests.deploy.tasks:softmax",
    "heartbeat_interval=0.3",
    "heartbeat_timeout=4",
    "round_timeout=60",
    "min_clients_wait=10",
]


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll ``condition`` until it returns something truthy; fail the test after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    pytest.fail(f"timed out after {timeout} s waiting for {what}")


def events(caplog: pytest.LogCaptureFixture, name: str) -> list[dict[str, Any]]:
    """The fields of every logged event called ``name``, in order."""
    return [dict(getattr(r, "sheaf_fields", {})) for r in caplog.records if r.getMessage() == name]


def simulate_inline(config: RunConfig, **options: Any) -> SimulationResult:
    """The simulation a deployed run must equal, run inline: the reference backend (the
    others give the same model), and no worker processes to start."""
    return simulate(config, backend=InlineBackend(), **options)


def deploy_config(tmp_path: Path, *extra: str) -> RunConfig:
    """The DEPLOY config with runs under ``tmp_path``."""
    return load_config(overrides=[*DEPLOY, f"runs_dir={tmp_path / 'runs'}", *extra])


def client_files(config: RunConfig, folder: Path) -> list[Path]:
    """Each client's rows of the simulated federation as its own NPZ file (same split)."""
    federation = build_federation(config.data, config.seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for client_id in range(federation.num_clients):
        data = federation.client(client_id)
        path = folder / f"client-{client_id}.npz"
        np.savez(path, x=data.train.x, y=data.train.y, x_test=data.test.x, y_test=data.test.y)
        paths.append(path)
    return paths


@pytest.fixture
def keys(tmp_path: Path) -> KeySet:
    """A CA, server certificate and keys of clients 0..3."""
    return init_keys(tmp_path / "keys", 4)


@pytest.fixture
def transport() -> Iterator[InProcessTransport]:
    """An in-process transport for one test; closed (its clients cancelled) at the end."""
    with InProcessTransport() as inprocess:
        yield inprocess


class ManualClock:
    """Monotonic seconds that move only when the test moves them."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Calls:
    """Counts the calls that reach an in-process transport, by the caller's key id."""

    def __init__(self, transport: InProcessTransport) -> None:
        self._counts: Counter[str] = Counter()
        self._lock = threading.Lock()
        transport.observe(self._seen)

    def _seen(self, method: str, metadata: Metadata) -> None:
        key = next((str(v) for k, v in metadata if k == KEY_HEADER), "")
        with self._lock:
            self._counts[key] += 1

    def counts(self) -> Counter[str]:
        with self._lock:
            return Counter(self._counts)


def key_ids(keys: KeySet, clients: Iterable[int]) -> list[str]:
    """The key ids the given clients sign with."""
    return [load_identity(keys.client_keys[i]).key_id for i in clients]


def let_time_pass(
    clock: ManualClock, calls: Calls, in_touch: list[str], until: Callable[[], bool], *, step: float
) -> None:
    """Move the server's clock on by ``step`` at a time until ``until()``.

    Before each step, every client in ``in_touch`` (key ids) has called since the last one,
    so with ``step`` below ``heartbeat_timeout`` they never look silent; a client that
    stopped calling falls silent after a few steps, with no real waiting.
    """
    while not until():
        clock.advance(step)
        _wait_for_calls(calls, calls.counts(), in_touch, until)


def _wait_for_calls(calls: Calls, seen: Counter[str], in_touch: list[str], until: Callable[[], bool]) -> None:
    wait_for(
        lambda: until() or all(calls.counts()[key] > seen[key] for key in in_touch),
        60,
        "the clients in touch to call again",
    )


class AllBack:
    """A round listener that holds the run until ``count`` clients have joined this server
    (on a busy machine a client still backing off could otherwise miss a short run)."""

    def __init__(self, transport: InProcessTransport, count: int) -> None:
        self.count, self.keys, self.back = count, set[str](), threading.Event()
        transport.observe(self._seen)

    def _seen(self, method: str, metadata: Any) -> None:
        if method.endswith("/Join"):
            self.keys.update(str(v) for k, v in metadata if k == "sheaf-key")
            if len(self.keys) >= self.count:
                self.back.set()

    def on_start(self, config: Any, first_round: int, cohort: int, population: int) -> None:
        self.back.wait(60)

    def on_round(self, record: Any) -> None:
        pass


@dataclass
class ServerThread:
    """``run_server`` on a thread, serving in-process or over real gRPC on loopback."""

    thread: threading.Thread
    port: int
    outcome: dict[str, Any] = field(default_factory=dict)

    def done(self) -> bool:
        return not self.thread.is_alive()

    def result(self, timeout: float = 120) -> ServerResult:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "server did not finish"
        if "error" in self.outcome:
            raise self.outcome["error"]
        result: ServerResult = self.outcome["result"]
        return result


def start_server(
    config: RunConfig,
    keys: KeySet,
    *,
    transport: InProcessTransport | None = None,
    strategy: Strategy | None = None,
    listener: RoundListener | None = None,
    clock: Callable[[], float] = time.monotonic,
    insecure: bool = True,
    **options: Any,
) -> ServerThread:
    """Serve ``config`` on a thread: through ``transport``, or over gRPC on a free loopback port.

    With a transport it returns once the server serves, so clients connect at once.
    """
    port = 0 if transport is not None else free_port()
    server_options = ServerOptions(address=f"127.0.0.1:{port}", keys=keys.folder, insecure=insecure, **options)
    handle = ServerThread(threading.Thread(target=lambda: None), port)

    def serve() -> None:
        try:
            handle.outcome["result"] = run_server(
                config, server_options, strategy=strategy, listener=listener, transport=transport, clock=clock
            )
        except BaseException as exc:  # handed to the test thread
            handle.outcome["error"] = exc

    handle.thread = threading.Thread(target=serve, daemon=True)
    handle.thread.start()
    if transport is not None:
        wait_for(lambda: transport.wait_until_serving(0.05) or handle.done(), 60, "the server to serve")
    return handle


@dataclass
class ClientRun:
    """A DeployedClient running; :meth:`status` is its exit status once it ended."""

    future: concurrent.futures.Future[int]

    def status(self, timeout: float = 30) -> int | None:
        """Its exit status (None if it raised)."""
        return None if self.error(timeout) is not None else self.future.result()

    def error(self, timeout: float = 30) -> BaseException | None:
        """What it raised, if it did."""
        return self.future.exception(timeout)


async def _run_client(client: DeployedClient) -> int:
    try:
        return await client.run()
    finally:
        client.close()


#: The task the DEPLOY clients bring themselves (a client never imports what the server names).
CLIENT_TASK = "tests.deploy.tasks:softmax"


def start_client(
    server: InProcessTransport | int,
    key: Path,
    data: Path,
    state_dir: Path,
    *,
    connect: Connector | None = None,
    **options: Any,
) -> ClientRun:
    """A DeployedClient of the in-process ``server``, or on a thread dialling the loopback port.

    It brings its own task, :data:`CLIENT_TASK` unless ``task=`` says otherwise ("" for the
    built-in model the run describes). ``connect`` replaces the in-process connections (e.g.
    to record what the server sends).
    """
    settings = {"insecure": True, "max_backoff": 0.5, "state_dir": state_dir, "task": CLIENT_TASK, **options}
    if isinstance(server, InProcessTransport):
        client = DeployedClient(ClientOptions("in-process", key, data, **settings), connect=connect or server.connect)
        return ClientRun(server.submit(_run_client(client)))
    client = DeployedClient(ClientOptions(f"127.0.0.1:{server}", key, data, **settings))
    future: concurrent.futures.Future[int] = concurrent.futures.Future()

    def run() -> None:
        try:
            future.set_result(asyncio.run(_run_client(client)))
        except BaseException as exc:
            future.set_exception(exc)

    threading.Thread(target=run, daemon=True).start()
    return ClientRun(future)


class Processes:
    """Real ``sheaf`` processes for one test; every one is killed when the test ends."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.running: dict[str, subprocess.Popen[bytes]] = {}
        self.env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}

    def start(
        self, name: str, *args: str, env: dict[str, str] | None = None, module: str = "sheaf"
    ) -> subprocess.Popen[bytes]:
        """Start ``python -m <module> *args`` (the ``sheaf`` command unless ``module`` says otherwise)."""
        log = open(self.folder / f"{name}.log", "ab")  # noqa: SIM115 - closed with the process
        process = subprocess.Popen(
            [sys.executable, "-m", module, *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            env={**self.env, **(env or {})},
        )
        log.close()
        self.running[name] = process
        return process

    def log(self, name: str) -> str:
        path = self.folder / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def kill(self, name: str) -> None:
        process = self.running[name]
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)

    def wait(self, name: str, timeout: float) -> int:
        try:
            return self.running[name].wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"{name} did not exit within {timeout} s; its log:\n{self.log(name)[-3000:]}")

    def close(self) -> None:
        for process in self.running.values():
            if process.poll() is None:
                process.kill()
        for process in self.running.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=30)


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    """Start ``sheaf`` subprocesses; all are killed when the test ends, pass or fail."""
    procs = Processes(tmp_path)
    try:
        yield procs
    finally:
        procs.close()


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """The server's and clients' events."""
    caplog.set_level(logging.INFO, logger="sheaf")
    return caplog


class HoldAfter:
    """A round listener that, after round ``round``, holds the round loop until ``go`` is set."""

    def __init__(self, round: int) -> None:
        self.round = round
        self.reached, self.go = threading.Event(), threading.Event()

    def on_start(self, config: RunConfig, first_round: int, cohort: int, population: int) -> None:
        pass

    def on_round(self, record: RoundRecord) -> None:
        if record.round == self.round:
            self.reached.set()
            assert self.go.wait(60), "the test never let the round loop go on"
