"""Deployed FedBuff against deployed synchronous FedAvg with one slow client, as JSON.

    python benchmarks/async_deploy.py [--rounds 6] [--slow 1.0] [--fast 0.2] [--repeats 1]

A whole deployment in this process (the real server, coordinator, auth, wire and
:class:`~sheaf.deploy.DeployedClient` s over the in-process transport: no sockets), four
digits clients with sheaf's NumPy softmax task (:mod:`sheaf.task.softmax`), one of which (client 3) takes ``--slow`` seconds
per fit and the others ``--fast``. Two modes, interleaved ``--repeats`` times:

- ``sync``: FedAvg, every client every round, ``--rounds`` rounds: each round waits for
  the slow client;
- ``fedbuff``: ``[asynchronous]`` with C = 4, K = 3 and as many server steps as make the
  same number of aggregated updates (``4 * rounds / 3``).

Prints one JSON object: per mode the wall seconds of the run (server start to its last
commit), updates aggregated, the final central accuracy on the digits' held-out split
(the server's ``--test-data``), seconds per round/step and, for FedBuff, staleness mean
and max; and the load average before and after (the machine may be shared).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from sheaf.core.config import load_config
from sheaf.core.params import Params
from sheaf.data.catalog import build_federation
from sheaf.data.dataset import DatasetInfo, Split
from sheaf.task.base import FitInstructions, FitResult
from sheaf.task.softmax import SoftmaxTask

#: Seconds per fit of the slow client (3) and of the others (set by ``main`` for the clients).
SLOW = {"slow": 1.0, "fast": 0.2}


class SlowClientTask(SoftmaxTask):
    """sheaf's NumPy softmax regression, 5 full-batch steps a fit; client 3 is slow (sleeps
    ``SLOW['slow']`` per fit, the others ``SLOW['fast']``)."""

    def fit(self, params: Params, data: Split, instructions: FitInstructions) -> FitResult:
        time.sleep(SLOW["slow"] if instructions.client_id == 3 else SLOW["fast"])
        return super().fit(params, data, instructions)


def task(info: DatasetInfo) -> SlowClientTask:
    """The benchmark's task (``async_deploy:task`` with benchmarks/ on the path)."""
    return SlowClientTask(info.num_features, info.num_classes, steps_per_epoch=5)


BASE = [
    "clients=4", "partition=iid", "fraction=1", "epochs=1", "lr=0.5", "task=async_deploy:task",
    "heartbeat_interval=0.3", "heartbeat_timeout=10", "evaluation.federated=false",
]  # fmt: skip


def run(mode: str, folder: Path, rounds: int) -> dict[str, Any]:
    """One deployed run in this process; its figures."""
    from sheaf.deploy import ClientOptions, DeployedClient, InProcessTransport, ServerOptions, init_keys, run_server

    steps = -(-4 * rounds // 3)
    sets = (
        [f"rounds={rounds}", "min_clients=4"]
        if mode == "sync"
        else [f"rounds={steps}", "min_clients=3", "asynchronous.enabled=true", "concurrency=4", "buffer=3"]
    )
    config = load_config(overrides=[*BASE, *sets, f"runs_dir={folder / mode}"])
    federation = build_federation(config.data, config.seed)
    files = []
    for client_id in range(4):
        data = federation.client(client_id)
        path = folder / f"client-{client_id}.npz"
        np.savez(path, x=data.train.x, y=data.train.y, x_test=data.test.x, y_test=data.test.y)
        files.append(path)
    central = federation.central_test
    assert central is not None
    np.savez(folder / "central.npz", x=central.x, y=central.y)
    keys = init_keys(folder / f"keys-{mode}", 4)
    options = ServerOptions(address="127.0.0.1:0", keys=keys.folder, insecure=True, test_data=folder / "central.npz",
                            run_path=folder / f"{mode}-{time.time_ns()}.sqlite")  # fmt: skip
    outcome: dict[str, Any] = {}

    async def client(i: int) -> int:
        deployed = DeployedClient(
            ClientOptions("in-process", keys.client_keys[i], files[i], insecure=True, max_backoff=0.5,
                          state_dir=folder / "state", task="async_deploy:task"),
            connect=transport.connect,
        )  # fmt: skip
        try:
            return await deployed.run()
        finally:
            deployed.close()

    with InProcessTransport() as transport:
        started = time.perf_counter()
        server = threading.Thread(
            target=lambda: outcome.update(result=run_server(config, options, transport=transport))
        )
        server.start()
        while not transport.wait_until_serving(0.05):
            pass
        clients = [transport.submit(client(i)) for i in range(4)]
        server.join()
        wall = time.perf_counter() - started
        statuses = [c.result(60) for c in clients]
    history = outcome["result"].history
    figures: dict[str, Any] = {
        "wall_seconds": round(wall, 2),
        "rounds_or_steps": len(history),
        "updates_aggregated": sum(r.completed for r in history),
        "central_accuracy": history.final_central.get("accuracy"),
        "seconds_per_round_median": round(statistics.median(r.seconds for r in history), 3),
        "client_exit_statuses": statuses,
    }
    if mode == "fedbuff":
        figures["staleness_mean"] = float(np.mean([r.fit["staleness_mean"] for r in history]))
        figures["staleness_max"] = max(r.fit["staleness_max"] for r in history)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=6, help="synchronous rounds (FedBuff: 4/3 as many steps)")
    parser.add_argument("--slow", type=float, default=1.0, help="seconds per fit of the slow client")
    parser.add_argument("--fast", type=float, default=0.2, help="seconds per fit of the others")
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    SLOW.update(slow=args.slow, fast=args.fast)
    import async_deploy  # the module the clients import the task from: the same settings

    async_deploy.SLOW.update(SLOW)
    load_before = os.getloadavg()
    runs: dict[str, list[dict[str, Any]]] = {"sync": [], "fedbuff": []}
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):
            for mode in runs:
                folder = Path(tmp) / f"{mode}-{repeat}"
                folder.mkdir()
                runs[mode].append(run(mode, folder, args.rounds))
    load_after = os.getloadavg()
    sync = statistics.median(r["wall_seconds"] for r in runs["sync"])
    fedbuff = statistics.median(r["wall_seconds"] for r in runs["fedbuff"])
    print(json.dumps({
        "slow_seconds_per_fit": args.slow, "fast_seconds_per_fit": args.fast, "clients": 4, "rounds": args.rounds,
        "runs": runs, "wall_seconds_median": {"sync": sync, "fedbuff": fedbuff},
        "sync_over_fedbuff": round(sync / fedbuff, 2),
        "load_average_before": load_before, "load_average_after": load_after,
    }, indent=1))  # fmt: skip


if __name__ == "__main__":
    main()
