"""Server load: many concurrent clients with a 1M-parameter model, as JSON.

    python benchmarks/server_load.py [--clients 100] [--processes 4] [--rounds 6] [--insecure]

Starts one real ``sheaf server`` process and ``--processes`` client processes, each running
``clients / processes`` :class:`~sheaf.deploy.DeployedClient` s concurrently in one asyncio
event loop, all on loopback. Every client is in every round; the task's model is a
1000x1000 weight matrix plus a bias (1,001,000 float32 parameters, 4.0 MB) and its "training"
is one cheap step, so the figures are the server's and the protocol's, not the model's.

Prints one JSON object:

- ``seconds_per_round``: wall seconds of each round as the server's round loop measured
  them (send the model to every client, collect and check every update, aggregate, commit
  the round to the store), and their median over the rounds after the first;
- ``server_peak_rss_mb``: the server process's peak resident memory (``VmHWM``);
- ``wire_bytes_per_round``: protobuf message bytes the server sent and received per round
  (before gRPC/HTTP2/TLS framing), next to ``raw_model_bytes x clients``, the least any
  protocol must move each way.

The clients share the machine's cores with the server; say so when quoting the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from sheaf.core.params import Params
from sheaf.data.dataset import Split
from sheaf.task.base import EvalResult, FitInstructions, FitResult

ROOT = Path(__file__).resolve().parents[1]


#: Rows of the weight matrix (``SHEAF_BENCH_ROWS``; 1000 here: 1,001,000 parameters).
ROWS = int(os.environ.get("SHEAF_BENCH_ROWS", "1000"))


class LoadTask:
    """A ROWSx1000 linear layer whose local step is a constant shift (cheap on purpose)."""

    def init_params(self, seed: int) -> Params:
        return Params({"w": np.zeros((ROWS, 1000), np.float32), "b": np.zeros(1000, np.float32)})

    def fit(self, params: Params, data: Split, instructions: FitInstructions) -> FitResult:
        step = np.float32(1e-3 * (instructions.client_id % 7 + 1))
        return FitResult(params.map(lambda a: a + step), len(data))

    def evaluate(self, params: Params, data: Split) -> EvalResult:
        return EvalResult(0.0, len(data), {})


def task() -> LoadTask:
    """The benchmark's task (``--set task=server_load:task`` with benchmarks/ on the path)."""
    return LoadTask()


def _peak_rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


async def _clients(port: int, folder: Path, ids: list[int], insecure: bool) -> list[int]:
    from sheaf.deploy.client import ClientOptions, DeployedClient
    from sheaf.deploy.policy import ClientPolicy, DataPolicy

    # Each client brings the benchmark's task itself; its 10 rows keep 2 for testing, and its
    # policy lets an update come from the other 8.
    policy = ClientPolicy(data=DataPolicy(min_train_examples=8))
    clients = [
        DeployedClient(
            ClientOptions(
                f"localhost:{port}",
                folder / "keys" / "clients" / f"client-{i}.key",
                folder / "data" / f"{i}.npz",
                ca=None if insecure else folder / "keys" / "ca.pem",
                insecure=insecure,
                task="server_load:task",
                state_dir=folder / "state",
                max_backoff=1.0,
                policy=policy,
            )
        )
        for i in ids
    ]
    try:
        return list(await asyncio.gather(*(c.run() for c in clients)))
    finally:
        for c in clients:
            c.close()


def run(clients: int, processes: int, rounds: int, insecure: bool, extra: Sequence[str] = ()) -> dict[str, object]:
    """One deployed run; ``extra`` are further ``--set`` overrides (e.g. secure aggregation)."""
    from sheaf.deploy.keys import init_keys

    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "benchmarks"), os.environ.get("PYTHONPATH", "")])}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        init_keys(folder / "keys", clients)
        (folder / "data").mkdir()
        rng = np.random.default_rng(0)
        for i in range(clients):
            np.savez(folder / "data" / f"{i}.npz", x=rng.random((10, 4), np.float32), y=np.arange(10) % 2)
        sets = [
            "task=server_load:task", "dataset=bench", "fraction=1", f"min_clients={clients}", f"rounds={rounds}",
            "evaluation.federated=false", "heartbeat_interval=2", "heartbeat_timeout=120", "round_timeout=600",
            f"runs_dir={folder / 'runs'}", "name=bench", "keep_params=1", *extra,
        ]  # fmt: skip
        import socket

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        server_cmd = [sys.executable, "-m", "sheaf", "server", *[a for s in sets for a in ("--set", s)]]
        server_cmd += ["--address", f"127.0.0.1:{port}", "--keys", str(folder / "keys"), "--log-json"]
        server_cmd += ["--insecure"] if insecure else []
        log = open(folder / "server.log", "wb")  # noqa: SIM115 - closed below
        server = subprocess.Popen(server_cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        groups = [list(range(clients))[g::processes] for g in range(processes)]
        workers = [
            subprocess.Popen(
                [sys.executable, __file__, "--group", json.dumps(ids), "--port", str(port), "--folder", str(folder)]
                + (["--insecure"] if insecure else []),
                cwd=ROOT,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for ids in groups
        ]
        peak = 0.0
        try:
            while server.poll() is None:
                peak = max(peak, _peak_rss_mb(server.pid) or 0.0)
                time.sleep(0.2)
        finally:
            for worker in workers:
                try:
                    worker.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    worker.kill()
            if server.poll() is None:
                server.kill()
            log.close()
        events = []
        for line in (folder / "server.log").read_text().splitlines():
            if line.startswith("{"):
                events.append(json.loads(line))
        done = [e for e in events if e["event"] == "round_done"]
        if server.returncode != 0 or len(done) != rounds:
            raise SystemExit(
                f"server failed ({server.returncode}); log tail:\n{(folder / 'server.log').read_text()[-3000:]}"
            )
    model_bytes = 4 * (ROWS * 1000 + 1000)
    seconds = [round(e["seconds"], 3) for e in done]
    sent = [e["bytes_sent"] for e in done]
    received = [e["bytes_received"] for e in done]
    return {
        "clients": clients,
        "client_processes": processes,
        "rounds": rounds,
        "tls": not insecure,
        "parameters": ROWS * 1000 + 1000,
        "raw_model_bytes": model_bytes,
        "seconds_per_round": seconds,
        "median_seconds_per_round": statistics.median(seconds[1:] or seconds),
        "server_peak_rss_mb": round(peak, 1),
        "wire_bytes_per_round": {
            "sent_median": int(statistics.median(sent[1:] or sent)),
            "received_median": int(statistics.median(received[1:] or received)),
            "raw_model_bytes_x_clients": model_bytes * clients,
        },
        "sent_over_raw": round(statistics.median(sent[1:] or sent) / (model_bytes * clients), 4),
        "received_over_raw": round(statistics.median(received[1:] or received) / (model_bytes * clients), 4),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_implementation()} "
        f"{platform.python_version()}",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--insecure", action="store_true", help="plaintext instead of TLS")
    parser.add_argument("--group", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.group is not None:  # a client process: run its share of the clients
        statuses = asyncio.run(_clients(args.port, args.folder, json.loads(args.group), args.insecure))
        raise SystemExit(max(statuses))
    print(json.dumps(run(args.clients, args.processes, args.rounds, args.insecure)))


if __name__ == "__main__":
    main()
