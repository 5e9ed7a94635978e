"""FedBuff deployed, in one process: the real server, coordinator, auth, wire and clients over
the in-process transport. Buffer semantics, staleness from the server's own ledger, lying and
late clients, max_staleness, the task timeout, a killed server's resume, and the step that is
the simulation's own function, bit for bit."""

from __future__ import annotations

from pathlib import Path

from sheaf.core.config import RunConfig
from sheaf.deploy.async_ledger import AsyncLedger
from sheaf.deploy.inprocess import InProcessTransport
from sheaf.deploy.keys import KeySet
from sheaf.run.buffered import buffer_step
from sheaf.run.store import RunStore
from sheaf.strategies.base import RoundContext
from sheaf.strategies.registry import build_strategy
from tests.deploy.conftest import client_files, deploy_config, start_client, start_server

ASYNC = ["asynchronous.enabled=true", "concurrency=3", "buffer=2", "min_clients=2", "rounds=4"]


def fedbuff_config(tmp_path: Path, *extra: str) -> RunConfig:
    return deploy_config(tmp_path, *ASYNC, *extra)


def test_a_deployed_fedbuff_run_steps_every_k_results_with_the_simulations_step(
    tmp_path: Path, keys: KeySet, transport: InProcessTransport
) -> None:
    config = fedbuff_config(tmp_path, "name=fedbuff")
    files = client_files(config, tmp_path / "data")
    server = start_server(config, keys, transport=transport)
    clients = [start_client(transport, keys.client_keys[i], files[i], tmp_path / "state") for i in range(4)]

    result = server.result()

    assert [client.status() for client in clients] == [0, 0, 0, 0]
    history = list(result.history)
    assert [(r.round, r.completed, r.aggregated) for r in history] == [(n, 2, True) for n in (1, 2, 3, 4)]
    with RunStore.open(result.run_path, readonly=True) as store:
        records = store.client_records(phase="fit")
        before = store.params(3)
    assert all("staleness" in rec.metrics for _, rec in records)
    # The last step again, through the simulation's step function, from what the server buffered.
    ledger = AsyncLedger(result.run_path)
    buffered = ledger.buffered(4)
    ledger.close()
    assert [(u.client_id, float(s)) for u, s in sorted(buffered, key=lambda b: b[0].client_id)] == [
        (rec.client_id, rec.metrics["staleness"]) for r, rec in records if r == 4
    ]
    strategy = build_strategy(config.strategy)
    template = strategy.init(before)
    with RunStore.open(result.run_path, readonly=True) as store:
        state = store.state(3, template=template)
    step = buffer_step(strategy, buffered, before, state, RoundContext(4, before, config.seed, 4), config)
    assert step.params.array_equal(result.params)
