"""Download compression: a client that missed rounds rebuilds the server's model bit for bit
from the encoded deltas it is sent, and is counted exactly those bytes (or the model's)."""

from __future__ import annotations

from pathlib import Path

import pytest

from sheaf.compress import DownloadState, apply_catch_up, catch_up, catch_up_rounds, compression_plan, with_compression
from sheaf.core.config import load_config
from sheaf.core.encoded import layout_bytes
from sheaf.core.errors import ConfigError
from sheaf.run.assemble import assemble
from sheaf.run.simulate import simulate
from sheaf.run.store import RunStore
from sheaf.strategies import fedavg
from tests.conftest import SMALL
from tests.deploy.tasks import CountingTask

DOWN = ["compression.encoder=q8", "compression.download=q4", "compression.rotate=true"]


def test_every_client_rebuilds_every_later_model_from_the_deltas_it_missed(tmp_path: Path) -> None:
    result = simulate(overrides=[*SMALL, f"runs_dir={tmp_path}", *DOWN, "rounds=8", "fraction=0.5"])
    plan = compression_plan(result.config, result.params)
    assert plan is not None
    encoder, keep = plan.downloader(), catch_up_rounds(plan)
    assert encoder is not None and keep == 7  # a 4-bit delta of the MLP costs about an eighth of the model
    strategy = with_compression(fedavg(), plan)
    with RunStore.open(result.run_path, readonly=True) as store:
        models = [store.params(r) for r in range(9)]
        states = [store.state(r, template=strategy.init(models[0]))[-1] for r in range(9)]
    rebuilt = 0
    for now in range(1, 9):
        state: DownloadState = states[now]
        for held in range(now):
            deltas = catch_up(state, held)
            if deltas is None:
                assert now - held > keep
                continue
            assert [r for r, _, _ in deltas] == list(range(held + 1, now + 1))
            assert apply_catch_up(models[held], encoder, deltas).array_equal(models[now])
            rebuilt += 1
    assert rebuilt == 8 * 9 // 2 - 1  # every pair but round 0 -> 8: one delta more than it holds


def test_each_client_is_counted_the_deltas_it_missed_or_the_model(tmp_path: Path) -> None:
    result = simulate(overrides=[*SMALL, f"runs_dir={tmp_path}", *DOWN, "rounds=6", "fraction=0.5"])
    plan = compression_plan(result.config, result.params)
    assert plan is not None and plan.downloader() is not None
    delta = layout_bytes(plan.downloader().layout)  # type: ignore[union-attr]
    model = result.params.nbytes
    last: dict[int, int] = {}
    with RunStore.open(result.run_path, readonly=True) as store:
        traffic = store.client_traffic()
    assert traffic
    for round, client, down, _ in traffic:
        missed = round - 1 - last[client] if client in last else None
        assert down == (model if missed is None or missed * delta >= model else missed * delta), (round, client)
        last[client] = round - 1  # every round moved the model here (none was skipped)
    total = sum(r.traffic["download_bytes"] for r in result.history)
    assert total < model * sum(r.sampled for r in result.history)


def test_a_deployed_server_refuses_download_compression() -> None:
    config = load_config(overrides=["compression.download=q8"])
    with pytest.raises(ConfigError, match="download compression runs in simulation"):
        assemble(config, population=4, task=CountingTask(), deployed=True)
