"""Compression as a strategy step: its client half encodes (with error feedback), its server
half decodes where updates arrive, before they are judged; runs with it are reproducible on
every backend, resume exactly, and compose with clipping and differential privacy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sheaf.backends.inline import InlineBackend
from sheaf.backends.pool import PoolBackend
from sheaf.backends.vectorized import VectorizedBackend
from sheaf.compress import (
    RESIDUAL_STATE,
    SEED_OPTION,
    build_encoder,
    compression_plan,
    round_seeds,
    with_compression,
)
from sheaf.core.config import TrainConfig, load_config
from sheaf.core.encoded import Encoded
from sheaf.core.errors import ConfigError
from sheaf.core.params import Params
from sheaf.core.update import Update
from sheaf.data.dataset import ClientData, Split
from sheaf.deploy.status import run_status
from sheaf.quantize import SeededBits
from sheaf.run.export import round_rows
from sheaf.run.report import report_run
from sheaf.run.simulate import SimulationResult, simulate
from sheaf.run.store import RunStore
from sheaf.strategies import RoundContext, fedavg, krum
from sheaf.task.base import EvalResult, FitInstructions, FitResult
from sheaf.task.client import fit_client
from tests.conftest import SMALL
from tests.helpers import rounds_of_updates
from tests.run.test_simulate import StopAfter
from tests.strategies.test_conformance import CONFORMANCE, build, decorated

TOPK = ["compression.encoder=topk", "compression.k=0.1"]
Q4 = ["compression.encoder=q4", "compression.rotate=true"]


class FixedDelta:
    """A task whose training always moves the params by the same delta (plain NumPy)."""

    def __init__(self, delta: np.ndarray) -> None:
        self.delta = delta

    def init_params(self, seed: int) -> Params:
        return Params({"w": np.zeros(self.delta.size, np.float32)})

    def fit(self, params: Params, data: Split, instructions: FitInstructions) -> FitResult:
        return FitResult(Params({"w": (params["w"] + self.delta).astype(np.float32)}), len(data))

    def evaluate(self, params: Params, data: Split) -> EvalResult:
        return EvalResult(0.0, len(data))


def _client(n: int = 4) -> ClientData:
    return ClientData(3, Split(np.zeros((n, 1)), np.zeros(n)), Split(np.zeros((0, 1)), np.zeros(0)))


def test_error_feedback_carries_what_top_k_left_out_into_the_next_round() -> None:
    delta = np.random.default_rng(0).normal(size=100).astype(np.float32)
    task = FixedDelta(delta)
    like = task.init_params(0)
    plan = compression_plan(load_config(overrides=TOPK), like)
    assert plan is not None and plan.error_feedback
    strategy = with_compression(fedavg(), plan)
    options = {**strategy.client_options, SEED_OPTION: 7}
    coder = build_encoder("topk", 100, k=0.1)
    state = None
    carried = np.zeros(100)
    for round in (1, 2, 3):
        update, state = fit_client(
            task, _client(), like, round=round, train=TrainConfig(), run_seed=0, options=options,
            client_state=state, steps=strategy.client_steps,
        )  # fmt: skip
        assert update.encoded is not None and state is not None
        sent = coder.decode(update.encoded, seed=7)
        residual = state[RESIDUAL_STATE]["residual"].astype(np.float64)
        # What was sent plus what is kept is this round's delta plus what was kept before.
        np.testing.assert_allclose(sent + residual, delta.astype(np.float64) + carried, rtol=0, atol=1e-6)
        assert np.count_nonzero(sent) == 10
        carried = residual
    assert np.abs(carried).max() > 0


def test_unbiased_quantisers_keep_no_state_by_default() -> None:
    task = FixedDelta(np.ones(10, np.float32))
    plan = compression_plan(load_config(overrides=Q4), task.init_params(0))
    assert plan is not None and not plan.error_feedback
    strategy = with_compression(fedavg(), plan)
    update, state = fit_client(
        task, _client(), task.init_params(0), round=1, train=TrainConfig(), run_seed=0,
        options={**strategy.client_options, SEED_OPTION: 1}, steps=strategy.client_steps,
    )  # fmt: skip
    assert state is None and update.encoded is not None and len(update.delta) == 0


def run(tmp_path: Path, *extra: str, backend: object = None, name: str = "") -> SimulationResult:
    overrides = [*SMALL, f"runs_dir={tmp_path}", *extra] + ([f"name={name}"] if name else [])
    return simulate(overrides=overrides, backend=backend)  # type: ignore[arg-type]


def same(a: SimulationResult, b: SimulationResult) -> None:
    assert a.params.array_equal(b.params)
    assert list(a.history) == list(b.history)
    assert [r.traffic for r in a.history] == [r.traffic for r in b.history]
    with RunStore.open(a.run_path, readonly=True) as sa, RunStore.open(b.run_path, readonly=True) as sb:
        assert sa.client_traffic() == sb.client_traffic()
        left, right = sa.client_states(range(20)), sb.client_states(range(20))
        assert left.keys() == right.keys()
        assert all(left[c][g].array_equal(right[c][g]) for c in left for g in left[c])


def test_a_stopped_run_resumes_with_each_clients_residual_to_the_same_model(tmp_path: Path) -> None:
    extra = [*TOPK, "rounds=5", "fraction=0.5"]
    with pytest.raises(KeyboardInterrupt):
        simulate(overrides=[*SMALL, f"runs_dir={tmp_path}", *extra, "name=stopped"], listener=StopAfter(2))
    with RunStore.open(tmp_path / "stopped.sqlite", readonly=True) as store:
        assert store.last_round == 2
        assert all(RESIDUAL_STATE in s for s in store.client_states(range(8)).values())
    resumed = run(tmp_path, *extra, name="stopped")
    straight = run(tmp_path, *extra, name="straight")
    same(resumed, straight)
    assert resumed.history[-1].traffic["upload_bytes"] > 0


def test_pool_gives_the_inline_model_bit_for_bit_and_vectorized_falls_back_to_it(tmp_path: Path) -> None:
    for extra in (TOPK, Q4):
        inline = run(tmp_path, *extra, backend=InlineBackend())
        same(inline, run(tmp_path, *extra, backend=PoolBackend(workers=2)))
        vectorized = run(tmp_path, *extra, backend=VectorizedBackend())  # client steps: it hands the cohort on
        same(inline, vectorized)


def test_the_server_half_decodes_before_the_rule_and_refuses_what_its_encoder_cannot_send() -> None:
    like = Params({"w": np.zeros(8, np.float32)})
    plan = compression_plan(load_config(overrides=["compression.encoder=q8"]), like)
    assert plan is not None
    strategy = with_compression(fedavg(), plan)
    options = {SEED_OPTION: round_seeds(0, 1)[0]}
    coder = build_encoder("q8", 8)
    good = coder.encode(np.arange(8.0), seed=int(options[SEED_OPTION]), bits=SeededBits(np.random.default_rng(0)))

    decoded = strategy.receive(Update(1, Params({}), 5, encoded=good), like, options)
    assert decoded.encoded is None and decoded.delta["w"].dtype == np.float32
    np.testing.assert_allclose(decoded.delta["w"], np.arange(8.0), atol=2 * 7 / 255 + 1e-6)  # one level: 2m / (L - 1)
    strategy.check_update(decoded, like)

    wide = Encoded({"codes": np.zeros(9, np.uint8), "scales": np.ones(1, np.float32)})
    plain = Update(1, like, 5)
    huge = Encoded({"codes": good["codes"], "scales": np.array([np.inf], np.float32)})
    for bad, why in ((wide, "its encoder sends"), (huge, "cannot decode"), (None, "got a plain delta")):
        update = plain if bad is None else Update(1, Params({}), 5, encoded=bad)
        with pytest.raises(Exception, match=why):
            strategy.receive(update, like, options)
    with pytest.raises(Exception, match="still encoded"):
        strategy.check_update(Update(1, Params({}), 5, encoded=good), like)


def test_compressed_updates_that_fail_to_decode_are_dropouts_and_krum_sees_decoded_ones(tmp_path: Path) -> None:
    result = run(tmp_path, *Q4, "strategy=krum", "strategy.f=1")
    assert result.history[-1].failed == 0 and result.history[-1].aggregated
    assert result.history[-1].traffic["upload_bytes"] < result.history[-1].traffic["download_bytes"] / 7
    assert krum(f=1).name == "krum"


def test_clip_then_noise_then_compress_and_the_decoded_update_stays_within_the_clip_norm(tmp_path: Path) -> None:
    central = ["privacy.mode=central", "privacy.clipping=client", "privacy.clip=0.5", "privacy.noise_multiplier=0.5"]
    for extra in ([*central, *TOPK], [*central, *Q4], [*central, "compression.encoder=bf16"]):
        result = run(tmp_path, *extra)
        with RunStore.open(result.run_path, readonly=True) as store:
            assert store.failures() == []  # no decoded update longer than the clip norm was refused
            assert store.meta["strategy"].endswith("-dp-fedavg")
        assert result.history[-1].privacy["epsilon"] > 0
    local = run(tmp_path, "privacy.mode=local", "privacy.noise_multiplier=0.3", "min_clients=1", *Q4)
    assert local.history[-1].failed == 0
    # The compression step is outermost: it encodes what clipping and noise produced.
    plan = compression_plan(load_config(overrides=Q4), Params({"w": np.zeros(3)}))
    assert plan is not None
    assert with_compression(fedavg(), plan).client_steps[0].name == "compress"


def test_secure_aggregation_already_quantises_so_compression_beside_it_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="secure aggregation already sends every update quantised"):
        run(tmp_path, "secagg.enabled=true", "secagg.stand_in=true", *Q4)


def test_compression_is_off_by_default_and_plain_runs_count_float32_bytes(tmp_path: Path) -> None:
    result = run(tmp_path)
    record = result.history[0]
    model = 4 * (64 * 64 + 64 + 64 * 10 + 10)  # digits' default MLP (64-64-10), float32
    assert record.traffic == {"download_bytes": 8.0 * model, "upload_bytes": 8.0 * model}
    assert compression_plan(result.config, Params({"w": np.zeros(3)})) is None
    assert "compression" not in result.summary()
    assert result.summary()["upload_bytes"] == 3 * 8 * model


def test_the_bytes_are_in_the_store_json_status_report_and_export(tmp_path: Path) -> None:
    result = run(tmp_path, *TOPK)
    per_update = result.summary()["upload_bytes"] / (3 * 8)
    with RunStore.open(result.run_path, readonly=True) as store:
        rows = store.client_traffic()
        assert store.meta["compression"]["upload_bytes"] == per_update
    assert len(rows) == 3 * 8 and {up for _, _, _, up in rows} == {per_update}
    assert result.summary()["compression"] == {"encoder": "topk", "download": "none"}
    status = run_status(result.run_path)
    assert status["traffic"]["upload_bytes"] == result.summary()["upload_bytes"]
    assert status["last_round"]["upload_bytes"] == 8 * per_update
    page = next(p for p in report_run(result.run_path, tmp_path / "report") if p.name == "report.html")
    assert "bytes sent by clients" in page.read_text() and "topk (7.62x fewer bytes)" in page.read_text()
    exported = round_rows(result.history)
    assert exported[0]["traffic_upload_bytes"] == 8 * per_update


@pytest.mark.parametrize("name", sorted(CONFORMANCE))
@settings(max_examples=5, deadline=None)
@given(case=rounds_of_updates(min_clients=7, max_clients=8), seed=st.integers(0, 2**30))
def test_every_strategy_aggregates_the_decoded_updates_exactly_as_it_would_the_same_plain_ones(
    name: str, case: tuple[Params, list[Update]], seed: int
) -> None:
    # Compression changes what travels, not what a strategy does with what arrives.
    start, raw = case
    plan = compression_plan(load_config(overrides=Q4), start)
    assert plan is not None
    plain = build(name)
    compressed = with_compression(plain, plan)
    options = {**compressed.configure(compressed.init(start), RoundContext(1, start, 0, 100)).options}
    coder = plan.upload()
    assert coder is not None
    received = []
    for update in decorated(name, raw):
        sent = coder.encode(
            update.delta.flatten(), seed=int(options[SEED_OPTION]), bits=SeededBits(np.random.default_rng(seed))
        )
        encoded = Update(update.client_id, Params({}), update.num_examples, update.metrics, update.extras, sent)
        received.append(compressed.receive(encoded, start, options))
    for update in received:
        compressed.check_update(update, start)
    assert compressed.update_rule.encoding == coder.layout and compressed.reads_updates
    ctx = RoundContext(1, start, 0, 100)
    ours, _, _ = compressed.aggregate(received, compressed.init(start), ctx)
    theirs, _, _ = plain.aggregate(received, plain.init(start), ctx)
    assert ours.array_equal(theirs)
