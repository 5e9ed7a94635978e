"""Fixtures for deployment tests: keys, client data files, servers and clients.

In-process helpers run the real gRPC server and clients on loopback in threads (fast);
:class:`Processes` starts the real ``sheaf server`` / ``sheaf client`` commands as
subprocesses and always kills them at the end of the test.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from sheaf.core.config import RunConfig, load_config
from sheaf.data.catalog import build_federation
from sheaf.deploy.client import ClientOptions, DeployedClient
from sheaf.deploy.inprocess import InProcessTransport
from sheaf.deploy.keys import KeySet, init_keys
from sheaf.deploy.server import ServerOptions, ServerResult, run_server
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


@dataclass
class ServerThread:
    """``run_server`` on a thread (real gRPC on loopback)."""

    thread: threading.Thread
    port: int
    outcome: dict[str, Any] = field(default_factory=dict)

    def result(self, timeout: float = 120) -> ServerResult:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "server did not finish"
        if "error" in self.outcome:
            raise self.outcome["error"]
        result: ServerResult = self.outcome["result"]
        return result


def start_server(
    config: RunConfig, keys: KeySet, *, strategy: Strategy | None = None, insecure: bool = True, **options: Any
) -> ServerThread:
    """Serve ``config`` in a thread on a free loopback port."""
    port = free_port()
    server_options = ServerOptions(address=f"127.0.0.1:{port}", keys=keys.folder, insecure=insecure, **options)
    handle = ServerThread(threading.Thread(target=lambda: None), port)

    def serve() -> None:
        try:
            handle.outcome["result"] = run_server(config, server_options, strategy=strategy)
        except BaseException as exc:  # handed to the test thread
            handle.outcome["error"] = exc

    handle.thread = threading.Thread(target=serve, daemon=True)
    handle.thread.start()
    return handle


def start_client(port: int, key: Path, data: Path, state_dir: Path, **options: Any) -> dict[str, Any]:
    """A DeployedClient on a thread; the returned dict gets its exit status as ``status``."""
    outcome: dict[str, Any] = {}
    settings = {"insecure": True, "max_backoff": 0.5, "state_dir": state_dir, **options}
    client = DeployedClient(ClientOptions(f"127.0.0.1:{port}", key, data, **settings))

    def run() -> None:
        try:
            outcome["status"] = asyncio.run(client.run())
        except BaseException as exc:
            outcome["error"] = exc
        finally:
            client.close()

    outcome["thread"] = threading.Thread(target=run, daemon=True)
    outcome["thread"].start()
    return outcome


class Processes:
    """Real ``sheaf`` processes for one test; every one is killed when the test ends."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.running: dict[str, subprocess.Popen[bytes]] = {}
        self.env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}

    def start(self, name: str, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        log = open(self.folder / f"{name}.log", "ab")  # noqa: SIM115 - closed with the process
        process = subprocess.Popen(
            [sys.executable, "-m", "sheaf", *args],
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
