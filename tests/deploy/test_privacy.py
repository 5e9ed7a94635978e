"""Differential privacy in deployment: the server noises with secure noise, clients clip,
noise and keep their own durable ledgers, and refuse past their budgets.

Whole deployed runs in one process (the in-process transport); the wire, signatures and
checks are the real ones.
"""

from __future__ import annotations

import logging
from pathlib import Path

import dp_accounting
import pytest
from dp_accounting import rdp

from sheaf.deploy.auth import load_identity
from sheaf.deploy.client_ledger import ClientLedger
from sheaf.deploy.inprocess import InProcessTransport
from sheaf.deploy.keys import KeySet, init_keys
from sheaf.deploy.status import run_status
from sheaf.run.store import RunStore
from tests.deploy.conftest import client_files, deploy_config, events, start_client, start_server

#: Central DP-FedAvg with client-side clipping, every client every round (Poisson, q = 1).
CENTRAL = ["sampling=poisson", "privacy.mode=central", "privacy.clipping=client", "privacy.noise_multiplier=1"]


def _rdp_epsilon(event: dp_accounting.DpEvent, count: int) -> float:
    return float(rdp.RdpAccountant().compose(dp_accounting.SelfComposedDpEvent(event, count)).get_epsilon(1e-5))


def test_a_deployed_private_run_accounts_every_round_and_a_client_at_its_budget_refuses(
    tmp_path: Path, keys: KeySet, transport: InProcessTransport
) -> None:
    config = deploy_config(tmp_path, *CENTRAL)
    files = client_files(config, tmp_path / "data")
    server = start_server(config, keys, transport=transport)
    state = tmp_path / "state"
    # Client 3's own limit, 8, covers rounds 1-2 (epsilon 7.08) but not round 3 (9.01).
    clients = [
        start_client(transport, keys.client_keys[i], files[i], state, privacy_budget=8.0 if i == 3 else 0.0)
        for i in range(4)
    ]

    result = server.result()

    assert [client.status() for client in clients] == [0, 0, 0, 0]
    event = dp_accounting.PoissonSampledDpEvent(1.0, dp_accounting.GaussianDpEvent(1.0))
    assert [r.privacy["epsilon"] for r in result.history] == [_rdp_epsilon(event, r) for r in range(1, 6)]
    assert [r.completed for r in result.history] == [4, 4, 3, 3, 3]
    with RunStore.open(result.run_path, readonly=True) as store:
        assert store.meta["privacy"]["noise"] == "secure"  # whatever privacy.noise says
        assert store.meta["strategy"] == "dp-fedavg"
        refusals = {(r, c): reason for r, c, phase, reason in store.failures() if phase == "fit"}
        run_id = store.meta["run_id"]
    assert set(refusals) == {(3, 3), (4, 3), (5, 3)}
    assert "fit refused: taking part in round 3" in refusals[(3, 3)] and "past its limit 8" in refusals[(3, 3)]
    # The ledger is the client's own, on its own disk: charged for rounds 1 and 2, no more.
    ledger = ClientLedger(state / f"ledger-{load_identity(keys.client_keys[3]).key_id}.json")
    assert ledger.last_trained(run_id) == 2
    assert ledger.epsilon(1e-5) == _rdp_epsilon(event, 2)


def test_a_client_with_a_budget_refuses_every_round_of_a_run_without_privacy(
    tmp_path: Path, keys: KeySet, transport: InProcessTransport
) -> None:
    config = deploy_config(tmp_path, "rounds=2")
    files = client_files(config, tmp_path / "data")
    server = start_server(config, keys, transport=transport)
    clients = [
        start_client(transport, keys.client_keys[i], files[i], tmp_path / "s", privacy_budget=1.0 if i == 0 else 0.0)
        for i in range(4)
    ]

    result = server.result()

    assert [client.status() for client in clients] == [0, 0, 0, 0]
    with RunStore.open(result.run_path, readonly=True) as store:
        reasons = [reason for _, c, phase, reason in store.failures() if phase == "fit" and c == 0]
    assert len(reasons) == 2 and all("not differentially private" in reason for reason in reasons)
    assert all("its policy asks for a budget of 1" in reason for reason in reasons)
    assert [r.completed for r in result.history] == [3, 3]


def test_local_dp_clients_noise_their_updates_and_stop_at_their_budgets(
    tmp_path: Path, transport: InProcessTransport, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="sheaf")
    keys = init_keys(tmp_path / "keys", 3)
    config = deploy_config(
        tmp_path, "clients=3", "min_clients=1", "rounds=3", "privacy.mode=local", "privacy.noise_multiplier=4",
        "privacy.clip=1",
    )  # fmt: skip
    files = client_files(deploy_config(tmp_path, "clients=3"), tmp_path / "data")
    server = start_server(config, keys, transport=transport)
    # Client 2's limit, 2.5, covers one update (epsilon 2.17) but not a second (3.19).
    clients = [
        start_client(
            transport, keys.client_keys[i], files[i], tmp_path / "state", privacy_budget=2.5 if i == 2 else 0.0
        )
        for i in range(3)
    ]

    result = server.result()

    assert [client.status() for client in clients] == [0, 0, 0]
    with RunStore.open(result.run_path, readonly=True) as store:
        history = store.history()
        refusals = [(r, c, reason) for r, c, phase, reason in store.failures() if phase == "fit"]
        fits = [rec for _, rec in store.client_records(phase="fit")]
        assert store.meta["privacy"]["mode"] == "local"
    assert [r.completed for r in history] == [3, 2, 2]
    assert [(r, c) for r, c, _ in refusals] == [(2, 2), (3, 2)]
    assert "fit refused: taking part in round 2" in refusals[0][2] and "past its limit 2.5" in refusals[0][2]
    # The worst client sent 3 updates, each a Gaussian mechanism of multiplier z / 2.
    assert history[-1].privacy["epsilon"] == _rdp_epsilon(dp_accounting.GaussianDpEvent(2.0), 3)
    # Nothing but the noised update left the clients: no metrics, one example each.
    assert fits and all(rec.num_examples == 1 and not rec.metrics for rec in fits)
    assert events(caplog, "round_done")[-1]["epsilon"] == history[-1].privacy["epsilon"]
    assert run_status(result.run_path)["privacy"]["epsilon"] == history[-1].privacy["epsilon"]
