"""Strategies in real runs: every one trains, state survives a restart, broken assumptions are recorded."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from sheaf.core.config import RunConfig, load_config
from sheaf.core.errors import ConfigError
from sheaf.core.params import Params
from sheaf.data.dataset import DatasetInfo, Split
from sheaf.run.report import report_run
from sheaf.run.simulate import simulate
from sheaf.run.store import RunStore
from sheaf.strategies.registry import available_strategies
from sheaf.task.base import EvalResult, FitInstructions, FitResult
from sheaf.task.factory import build_task
from tests.conftest import SMALL
from tests.run.test_simulate import StopAfter

HYPER = {"krum": ["strategy.f=1"], "multikrum": ["strategy.f=1"], "bulyan": ["strategy.f=1"]}


def config(runs_dir: str, *extra: str) -> RunConfig:
    return load_config(overrides=[*SMALL, runs_dir, *extra])


@pytest.mark.parametrize("name", available_strategies())
def test_every_strategy_trains_the_built_in_model_through_the_round_loop(name: str, runs_dir: str) -> None:
    result = simulate(config(runs_dir, "rounds=2", f"strategy={name}", *HYPER.get(name, [])))
    assert all(r.aggregated for r in result.history), [r.note for r in result.history]
    first = simulate(config(runs_dir, "rounds=1", f"strategy={name}", *HYPER.get(name, [])))
    assert not result.params.array_equal(first.params)
    assert result.params.all_finite()


@pytest.mark.parametrize("name", ["fedadam", "scaffold", "fedper"])
def test_a_stopped_run_resumes_with_its_strategy_and_client_state_and_ends_the_same(name: str, runs_dir: str) -> None:
    cfg = config(runs_dir, "rounds=4", "fraction=0.5", f"strategy={name}", f"name={name}")
    with pytest.raises(KeyboardInterrupt):
        simulate(cfg, listener=StopAfter(2))
    resumed = simulate(cfg)
    straight = simulate(cfg.replace(name=f"{name}-straight"))
    assert resumed.params.array_equal(straight.params)
    assert list(resumed.history) == list(straight.history)
    with RunStore.open(resumed.run_path) as a, RunStore.open(straight.run_path) as b:
        left, right = a.client_states(range(8)), b.client_states(range(8))
    assert left.keys() == right.keys()
    for cid, groups in left.items():
        assert all(groups[g].array_equal(right[cid][g]) for g in groups)
    if name == "scaffold":
        assert left  # the clients that trained hold a control variate


def test_server_lr_decay_follows_the_server_round_through_a_resume(runs_dir: str) -> None:
    # the decayed rate comes from the server's round count: a run stopped after round 2 and
    # resumed steps rounds 3-4 with lr * decay^2 and decay^3, as the straight run does
    cfg = config(runs_dir, "rounds=4", "strategy=fedavgm", "strategy.lr=1.0", "strategy.lr_decay=0.5", "name=decay")
    with pytest.raises(KeyboardInterrupt):
        simulate(cfg, listener=StopAfter(2))
    resumed = simulate(cfg)
    straight = simulate(cfg.replace(name="decay-straight"))
    assert resumed.params.array_equal(straight.params)
    constant = simulate(config(runs_dir, "rounds=4", "strategy=fedavgm", "strategy.lr=1.0", "name=constant"))
    assert not constant.params.array_equal(straight.params)


class Crashing:
    """The built-in task, except that some clients crash every round."""

    def __init__(self, cfg: RunConfig, crash: set[int]) -> None:
        self.inner = build_task(cfg, DatasetInfo("digits", (64,), 10, tuple("0123456789")))
        self.crash = crash

    def init_params(self, seed: int) -> Params:
        return self.inner.init_params(seed)

    def fit(self, params: Params, data: Split, instructions: FitInstructions) -> FitResult:
        if instructions.client_id in self.crash:
            raise RuntimeError("battery died")
        return self.inner.fit(params, data, instructions)

    def evaluate(self, params: Params, data: Split) -> EvalResult:
        return self.inner.evaluate(params, data)


def test_a_round_too_small_for_krum_leaves_the_model_unchanged_and_says_why(runs_dir: str) -> None:
    cfg = config(runs_dir, "strategy=krum", "strategy.f=2")  # 8 sampled, 7 needed
    result = simulate(cfg, task=Crashing(cfg, crash={1, 4}))
    assert result.history.rounds_completed == 3
    for record in result.history:
        assert not record.aggregated and record.completed == 0 and record.failed == 2
        assert record.note == "Krum with f=2 assumes n >= 2f + 3 = 7 updates, but only 6 arrived; round skipped"
    with RunStore.open(result.run_path, readonly=True) as store:
        assert store.params(3).array_equal(store.params(0))
        assert store.history()[0].note == result.history[0].note


def test_a_cohort_too_small_for_the_assumption_is_refused_before_anything_runs(runs_dir: str) -> None:
    with pytest.raises(
        ConfigError, match=r"Bulyan with f=2 assumes n >= 4f \+ 3 = 11 updates, but a round samples only 8"
    ):
        simulate(config(runs_dir, "strategy=bulyan", "strategy.f=2"))
    assert not list(Path(config(runs_dir).runs_dir).glob("*.sqlite"))


class NoSteps:
    """A task that does not report its local steps (FedNova cannot use it)."""

    def init_params(self, seed: int) -> Params:
        return Params({"w": np.zeros(2)})

    def fit(self, params: Params, data: Split, instructions: FitInstructions) -> FitResult:
        return FitResult(params.map(lambda a: a + 1), len(data))

    def evaluate(self, params: Params, data: Split) -> EvalResult:
        return EvalResult(0.0, len(data), {"accuracy": 1.0})


def test_clients_that_cannot_run_a_strategys_client_step_are_recorded_dropouts(runs_dir: str) -> None:
    result = simulate(config(runs_dir, "strategy=fednova", "rounds=1"), task=NoSteps())
    (record,) = result.history
    assert not record.aggregated and record.failed == 8
    with RunStore.open(result.run_path, readonly=True) as store:
        reasons = {reason for _, _, _, reason in store.failures()}
    assert reasons == {
        "fit failed: TaskError: FedNova needs the task to report its local optimiser steps as metric 'steps'"
    }


def test_personalised_evaluation_is_reported_beside_the_global_model(runs_dir: str, tmp_path: Path) -> None:
    result = simulate(config(runs_dir, "finetune_steps=5", "finetune_lr=0.02", "partition=dirichlet", "alpha=0.1"))
    evaluated = [r for r in result.history if r.federated]
    assert [r.round for r in evaluated] == [2, 3]
    for record in evaluated:
        assert record.federated["personalized_accuracy"]["clients"] == record.federated["accuracy"]["clients"]
        # on label-skewed data a few steps on its own data lower the clients' test loss
        assert record.federated["personalized_loss"]["mean"] < record.federated["loss"]["mean"]
    assert result.summary()["personalized_accuracy"]["mean"] == evaluated[-1].federated["personalized_accuracy"]["mean"]
    with RunStore.open(result.run_path, readonly=True) as store:
        tuned = store.client_records(round=3, phase="personalized")
        assert len(tuned) == len(store.client_records(round=3, phase="evaluate"))
        assert all("accuracy" in rec.metrics for _, rec in tuned)
        assert store.clients_with_state == 0  # fine-tuning keeps nothing
    page = report_run(result.run_path, tmp_path / "report")[-1].read_text()
    assert "personalised accuracy" in page


def test_fedper_is_evaluated_with_each_clients_own_head(runs_dir: str) -> None:
    result = simulate(config(runs_dir, "strategy=fedper", "rounds=4", "alpha=0.1", "partition=dirichlet"))
    final = result.history.final_federated
    assert final["personalized_accuracy"]["mean"] > final["accuracy"]["mean"]
    with RunStore.open(result.run_path, readonly=True) as store:
        states = store.client_states(range(8))
    assert states and all(set(s) == {"fedper"} and set(s["fedper"]) == {"3.weight", "3.bias"} for s in states.values())


def test_an_attacked_run_records_who_attacked_and_the_same_seed_picks_the_same_attackers(runs_dir: str) -> None:
    cfg = config(runs_dir, "attack=sign_flip", "attack.malicious_fraction=0.25")
    first, second, clean = simulate(cfg), simulate(cfg), simulate(config(runs_dir))
    with RunStore.open(first.run_path, readonly=True) as store:
        attack, stored = store.meta["attack"], store.config["attack"]
    assert attack["name"] == "sign_flip" and len(attack["malicious_clients"]) == 2
    assert first.params.array_equal(second.params)
    assert not first.params.array_equal(clean.params)
    assert json.dumps(stored) == json.dumps(
        {"name": "sign_flip", "malicious_fraction": 0.25, "per_round": False, "scale": 10.0, "noise_std": 1.0}
    )


@pytest.mark.e2e
def test_twenty_percent_attackers_break_fedavg_but_not_krum_or_bulyan(runs_dir: str) -> None:
    base = ["rounds=20", "clients=20", "partition=iid", "fraction=0.5", "evaluation.interval=20", runs_dir]
    accuracy = {}
    for name, hyper in (("fedavg", []), ("krum", ["strategy.f=2"]), ("bulyan", ["strategy.f=1"])):
        for attack in ("none", "sign_flip", "scale"):
            cfg = load_config(overrides=[*base, f"strategy={name}", *hyper, f"attack={attack}"])
            accuracy[name, attack] = simulate(cfg).history.final_central["accuracy"]
    assert accuracy["fedavg", "none"] > 0.85
    assert accuracy["fedavg", "sign_flip"] < 0.3
    assert accuracy["fedavg", "scale"] < accuracy["fedavg", "none"] - 0.2
    for name in ("krum", "bulyan"):
        for attack in ("sign_flip", "scale"):
            assert accuracy[name, attack] >= accuracy[name, "none"] - 0.05, (name, attack, accuracy)
