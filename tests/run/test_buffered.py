"""FedBuff on the virtual clock: buffer semantics and staleness weights against a hand-computed
example, the same model on every backend, and what it refuses."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest

from sheaf.backends.base import Cohort, FitOutcome
from sheaf.backends.inline import InlineBackend
from sheaf.backends.pool import PoolBackend
from sheaf.backends.vectorized import VectorizedBackend
from sheaf.core.errors import ConfigError, StoreError
from sheaf.core.params import Params
from sheaf.data.dataset import DatasetInfo, Federation, Split
from sheaf.evaluation.history import RoundRecord
from sheaf.run.assemble import assemble
from sheaf.run.buffered import RESUME_KEY, staleness_weight
from sheaf.run.simulate import load_run_config, simulate
from sheaf.run.store import RunStore
from sheaf.task.base import EvalResult, FitInstructions, FitResult
from tests.backends.tasks import digits, mlp_task

ASYNC = ["devices.enabled=true", "asynchronous.enabled=true"]


class StepTask:
    """Training adds the client's one feature value to ``w``: client ``c``'s delta is ``c + 1``."""

    def init_params(self, seed: int) -> Params:
        return Params({"w": np.zeros(1, np.float32)})

    def fit(self, params: Params, data: Split, instructions: FitInstructions) -> FitResult:
        return FitResult(Params({"w": params["w"] + data.x[:, 0].mean()}), len(data), {})

    def evaluate(self, params: Params, data: Split) -> EvalResult:
        return EvalResult(0.0, len(data), {})


def three_clients() -> Federation:
    x = np.array([[1.0], [2.0], [3.0]], np.float32)
    return Federation(
        DatasetInfo("three", (1,), 2, ("a", "b")),
        x,
        np.zeros(3, np.int64),
        np.array([0, 1, 2, 3]),
        np.array([1, 1, 1]),
        Split(x, np.zeros(3, np.int64)),
    )


def hand_run(tmp_path: Path, *extra: str) -> tuple[list[float], Path]:
    # Seconds per sample (one sample each): client 0: 1, client 1: 3.5, client 2: 2; transfers ~0.
    trace = tmp_path / "devices.csv"
    trace.write_text("compute,download_mbps,upload_mbps\n1,1e6,1e6\n3.5,1e6,1e6\n2,1e6,1e6\n")
    overrides = [
        *ASYNC,
        "profiles=trace",
        f"trace={trace}",
        "concurrency=3",
        "buffer=2",
        "rounds=2",
        "epochs=1",
        "backend=inline",
        "evaluation.federated=false",
        f"runs_dir={tmp_path}",
        *extra,
    ]
    result = simulate(overrides=overrides, task=StepTask(), federation=three_clients())
    with RunStore.open(result.run_path, readonly=True) as store:
        steps = [float(store.params(r)["w"][0]) for r in (1, 2)]
    return steps, result.run_path


def test_buffer_and_staleness_weights_match_the_hand_computed_run(tmp_path: Path) -> None:
    # t=0: all three pull version 0. t=1: client 0 arrives; t=2: client 2 arrives: the buffer
    # holds K=2, step 1: w = 0 + mean(1, 3) = 2. Clients 0 and 2 pull version 1 (client 1 is
    # still training). t=3: client 0 arrives (staleness 0, delta 1); t=3.5: client 1 arrives,
    # from version 0 (staleness 1, delta 2, weight 1/sqrt(2)): step 2: w = 2 + (1 + sqrt 2) / 2.
    steps, path = hand_run(tmp_path)
    assert steps == pytest.approx([2.0, 2.0 + (1 + math.sqrt(2)) / 2], abs=1e-6)
    with RunStore.open(path, readonly=True) as store:
        history = store.history()
        records = store.client_records(phase="fit")
    assert [r.virtual_seconds for r in history] == pytest.approx([2.0, 3.5], abs=1e-6)
    assert [(r.sampled, r.completed, r.failed) for r in history] == [(3, 2, 0), (2, 2, 0)]
    staleness = {(rnd, rec.client_id): rec.metrics["staleness"] for rnd, rec in records}
    assert staleness == {(1, 0): 0.0, (1, 2): 0.0, (2, 0): 0.0, (2, 1): 1.0}
    assert history[1].fit["staleness_mean"] == 0.5 and history[1].fit["staleness_max"] == 1.0


def test_a_client_with_two_updates_in_one_steps_buffer_counts_twice_and_has_both_records(tmp_path: Path) -> None:
    # Seconds per sample: client 0: 1, client 1: 5, client 2: 3; two slots, drawn with the run's seed.
    # Step 3's buffer holds client 2's update from version 1 (1 step stale: step 2 came while it
    # trained) and, as it pulled version 2 at once and nobody else arrived first, its update from
    # version 2: deployment reaches the same buffer (tests/deploy/test_buffered.py).
    trace = tmp_path / "devices.csv"
    trace.write_text("compute,download_mbps,upload_mbps\n1,1e6,1e6\n5,1e6,1e6\n3,1e6,1e6\n")
    overrides = [*ASYNC, "profiles=trace", f"trace={trace}", "concurrency=2", "buffer=2", "min_clients=1", "rounds=3",
                 "epochs=1", "backend=inline", "evaluation.federated=false", f"runs_dir={tmp_path}"]  # fmt: skip
    result = simulate(overrides=overrides, task=StepTask(), federation=three_clients())

    with RunStore.open(result.run_path, readonly=True) as store:
        records = [(rec.client_id, rec.metrics["staleness"]) for _, rec in store.client_records(3, phase="fit")]
        moved = float(store.params(3)["w"][0] - store.params(2)["w"][0])
    assert records == [(2, 1.0), (2, 0.0)] and result.history[-1].completed == 2
    assert moved == pytest.approx((3 / math.sqrt(2) + 3) / 2, abs=1e-6)  # client 2's delta 3, once weighted 1/sqrt 2


def test_the_server_learning_rate_scales_each_step(tmp_path: Path) -> None:
    steps, _ = hand_run(tmp_path, "server_lr=0.5")
    assert steps == pytest.approx([1.0, 1.0 + 0.5 * (1 + math.sqrt(2)) / 2], abs=1e-6)


def test_without_staleness_weighting_a_stale_update_counts_in_full(tmp_path: Path) -> None:
    steps, _ = hand_run(tmp_path, "staleness=none")
    assert steps == pytest.approx([2.0, 3.5], abs=1e-6)


def test_staleness_weights() -> None:
    assert [staleness_weight(s, "sqrt") for s in (0, 1, 3, 8)] == pytest.approx([1, 2**-0.5, 0.5, 1 / 3])
    assert staleness_weight(7, "none") == 1.0


DIGITS = [*ASYNC, "rounds=4", "concurrency=6", "buffer=3", "epochs=1", "batch_size=8", "evaluation.interval=2"]


def test_the_same_seed_gives_the_same_model_inline_and_in_a_pool(tmp_path: Path) -> None:
    def run(backend: InlineBackend | PoolBackend, name: str) -> tuple[object, ...]:
        result = simulate(
            overrides=[*DIGITS, "availability=diurnal", f"runs_dir={tmp_path}", f"name={name}"],
            task=mlp_task(),
            federation=digits(30),
            backend=backend,
        )
        with RunStore.open(result.run_path, readonly=True) as store:
            return result.params, list(result.history), store.client_records(), store.failures()

    inline, pool = run(InlineBackend(), "inline"), run(PoolBackend(workers=2), "pool")
    assert isinstance(inline[0], Params) and inline[0].array_equal(pool[0])  # type: ignore[arg-type]
    assert inline[1:] == pool[1:]
    assert max(r.fit["staleness_max"] for r in inline[1]) >= 1  # type: ignore[attr-defined]


def test_devices_that_go_offline_mid_training_are_dropouts_with_their_reason(tmp_path: Path) -> None:
    # An hour of work per client on devices online two hours a day: many windows close first.
    result = simulate(
        overrides=[
            *DIGITS,
            "availability=diurnal",
            "online_hours=2",
            "compute=60",
            f"runs_dir={tmp_path}",
            "backend=inline",
        ],
        task=mlp_task(),
        federation=digits(30),
    )
    with RunStore.open(result.run_path, readonly=True) as store:
        reasons = [reason for _, _, _, reason in store.failures()]
    assert any(r.startswith("went offline") for r in reasons)
    assert result.history.rounds_completed == 4 and result.history[-1].virtual_seconds > 3600


class StopAt:
    def __init__(self, round: int) -> None:
        self.round = round

    def on_start(self, *args: object) -> None: ...

    def on_round(self, record: RoundRecord) -> None:
        if record.round == self.round:
            raise KeyboardInterrupt


def test_a_stopped_run_resumes_to_the_model_of_an_uninterrupted_one(tmp_path: Path) -> None:
    overrides = [*DIGITS, "availability=diurnal", "rounds=5", f"runs_dir={tmp_path}", "backend=inline"]

    def run(name: str, listener: StopAt | None = None) -> tuple[object, ...]:
        result = simulate(
            overrides=[*overrides, f"name={name}"], task=mlp_task(), federation=digits(30), listener=listener
        )
        with RunStore.open(result.run_path, readonly=True) as store:
            return result.params, list(result.history), store.client_records(), store.failures()

    whole = run("whole")
    for stop in (1, 3):
        with pytest.raises(KeyboardInterrupt):
            run(f"stopped-{stop}", StopAt(stop))
        resumed = run(f"stopped-{stop}")
        assert isinstance(resumed[0], Params) and resumed[0].array_equal(whole[0])  # type: ignore[arg-type]
        assert resumed[1:] == whole[1:]


def test_a_finished_run_is_shown_and_a_damaged_one_refused(tmp_path: Path) -> None:
    overrides = [*DIGITS, f"runs_dir={tmp_path}", "name=a", "backend=inline", "rounds=2"]
    first = simulate(overrides=overrides, task=mlp_task(), federation=digits(12))
    again = simulate(overrides=overrides, task=mlp_task(), federation=digits(12))
    assert again.params.array_equal(first.params) and list(again.history) == list(first.history)

    stopped = [*DIGITS, f"runs_dir={tmp_path}", "name=b", "backend=inline"]
    with pytest.raises(KeyboardInterrupt):
        simulate(overrides=stopped, task=mlp_task(), federation=digits(12), listener=StopAt(2))
    with RunStore.open(tmp_path / "b.sqlite") as store:
        store.set_meta(RESUME_KEY, {"round": 1, "events": "?"})
    with pytest.raises(StoreError, match="holds 2 asynchronous steps but not what resuming after step 2 needs"):
        simulate(overrides=stopped, task=mlp_task(), federation=digits(12))


@pytest.mark.parametrize(
    ("extra", "says"),
    [
        (["asynchronous.enabled=true"], "asynchronous.enabled needs devices.enabled = true in a simulation"),
        ([*ASYNC, "strategy=scaffold"], "strategy 'scaffold' runs steps on its clients"),
        ([*ASYNC, "privacy.mode=central"], "does not support differential privacy or secure aggregation"),
        ([*ASYNC, "deadline=60"], "devices.deadline and devices.overselect shape synchronous rounds"),
        ([*ASYNC, "buffer=2", "min_clients=3"], "strategy.min_clients (3) exceeds asynchronous.buffer (2)"),
    ],
)
def test_what_fedbuff_does_not_support_is_refused_in_one_line(extra: list[str], says: str) -> None:
    with pytest.raises(ConfigError) as caught:
        assemble(load_run_config(overrides=extra), population=20, task=StepTask())
    assert says in str(caught.value) and "\n" not in str(caught.value)


@pytest.mark.parametrize("extra", [[], ["asynchronous.enabled=true"]])
def test_a_deployed_server_refuses_simulated_devices(extra: list[str]) -> None:
    with pytest.raises(ConfigError, match="simulated devices run in simulation only"):
        assemble(
            load_run_config(overrides=["devices.enabled=true", *extra]), population=20, task=StepTask(), deployed=True
        )


def test_a_deployed_server_runs_fedbuff_without_devices_but_refuses_federated_evaluation() -> None:
    chosen = load_run_config(overrides=["asynchronous.enabled=true", "buffer=2", "min_clients=2"])
    assert assemble(chosen, population=20, task=StepTask(), deployed=True).strategy.name == "fedavg"
    with pytest.raises(ConfigError, match="does no federated evaluation"):
        assemble(chosen.replace(evaluation=dataclasses.replace(chosen.evaluation, federated=True)), population=20,
                 task=StepTask(), deployed=True)  # fmt: skip


class LosesClientOne(InlineBackend):
    """A backend that returns nothing at all for client 1."""

    def fit(self, cohort: Cohort) -> FitOutcome:
        outcome = super().fit(cohort)
        return FitOutcome([u for u in outcome.updates if u.client_id != 1], outcome.failures)


def test_a_client_the_backend_lost_is_a_dropout_not_a_crash(tmp_path: Path) -> None:
    # As the hand-computed run, but client 1's update never comes back: step 2 waits for
    # client 2 (version 1, at t = 4): w = 2 + mean(1, 3) = 4.
    trace = tmp_path / "devices.csv"
    trace.write_text("compute,download_mbps,upload_mbps\n1,1e6,1e6\n3.5,1e6,1e6\n2,1e6,1e6\n")
    overrides = [*ASYNC, "profiles=trace", f"trace={trace}", "concurrency=3", "buffer=2", "rounds=2", "epochs=1"]
    result = simulate(
        overrides=[*overrides, "evaluation.federated=false", f"runs_dir={tmp_path}"],
        task=StepTask(),
        federation=three_clients(),
        backend=LosesClientOne(),
    )
    assert float(result.params["w"][0]) == pytest.approx(4.0)
    with RunStore.open(result.run_path, readonly=True) as store:
        assert [(c, why) for _, c, _, why in store.failures()] == [
            (1, "the backend returned no result for this client")
        ]


def test_the_vectorized_backend_gives_the_inline_model_within_float32_rounding(tmp_path: Path) -> None:
    def run(backend: InlineBackend | VectorizedBackend, name: str) -> Params:
        return simulate(
            overrides=[*DIGITS, "availability=diurnal", f"runs_dir={tmp_path}", f"name={name}"],
            task=mlp_task(),
            federation=digits(30),
            backend=backend,
        ).params

    inline, vectorized = run(InlineBackend(), "inline"), run(VectorizedBackend(), "vectorized")
    assert all(np.allclose(inline[k], vectorized[k], rtol=1e-4, atol=1e-6) for k in inline)


def test_a_run_whose_in_flight_versions_were_deleted_cannot_resume_and_says_why(tmp_path: Path) -> None:
    stopped = [*DIGITS, "rounds=6", "keep_params=1", f"runs_dir={tmp_path}", "name=k", "backend=inline"]
    with pytest.raises(KeyboardInterrupt):
        simulate(overrides=stopped, task=mlp_task(), federation=digits(30), listener=StopAt(4))
    with pytest.raises(StoreError, match="keep_params deletes older versions"):
        simulate(overrides=stopped, task=mlp_task(), federation=digits(30))


def test_an_update_older_than_max_staleness_is_a_dropout_with_the_reason(tmp_path: Path) -> None:
    # The hand-computed run with max_staleness=0: client 1's update from version 0 arrives
    # after step 1 (staleness 1) and is refused; step 2 waits for client 2 (t = 4, delta 3).
    steps, path = hand_run(tmp_path, "max_staleness=0")
    assert steps == pytest.approx([2.0, 2.0 + (1 + 3) / 2], abs=1e-6)
    with RunStore.open(path, readonly=True) as store:
        failures = store.failures()
    assert failures == [
        (2, 1, "fit", "update refused: its model is 1 server steps old, past asynchronous.max_staleness=0")
    ]
