"""Client steps around task.fit: order, unknown names, FedPer's head, fine-tuned evaluation, local_steps."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from sheaf.core.config import TrainConfig
from sheaf.core.errors import TaskError
from sheaf.core.params import Params
from sheaf.data.dataset import ClientData, Split
from sheaf.run.assemble import builtin_client_steps
from sheaf.run.personalize import FINETUNE_EVALUATE
from sheaf.strategies.fedper import fedper_client_step, head_names
from sheaf.task.base import EvalResult, FitInstructions, FitResult
from sheaf.task.client import fit_client
from sheaf.task.client_steps import (
    ClientContext,
    ClientStep,
    FitFn,
    fit_with_steps,
    personalizing,
    resolve_steps,
    steps_by_name,
)
from sheaf.task.torch_task import TorchTask


class Recorder:
    """Adds 1 to every tensor and remembers the params it was asked to train from."""

    def __init__(self) -> None:
        self.seen: list[Params] = []

    def init_params(self, seed: int) -> Params:
        return Params({"0.weight": np.zeros(2), "2.weight": np.zeros(2), "2.bias": np.zeros(1)})

    def fit(self, params: Params, data: Split, instructions: FitInstructions) -> FitResult:
        self.seen.append(params)
        return FitResult(params.map(lambda a: a + 1), len(data), {"steps": 1.0})

    def evaluate(self, params: Params, data: Split) -> EvalResult:
        return EvalResult(float(params["2.bias"][0]), len(data), {"accuracy": 0.5})


def data(cid: int = 2) -> ClientData:
    split = Split(np.zeros((4, 1), np.float32), np.zeros(4, np.int64))
    return ClientData(cid, split, split)


def tag(label: str) -> ClientStep:
    def run(fit: FitFn, params: Params, instructions: FitInstructions, client: ClientContext) -> FitResult:
        result = fit(params, instructions)
        order = result.metrics.get("order", 0.0) * 10 + float(label)
        return dataclasses.replace(result, metrics={**result.metrics, "order": order})

    return ClientStep(f"tag{label}", run)


def test_steps_wrap_in_order_the_first_outermost() -> None:
    task = Recorder()
    instructions = FitInstructions(1, 2, TrainConfig(), 0)
    result = fit_with_steps(task, data(), task.init_params(0), instructions, (tag("1"), tag("2")))
    assert result.metrics["order"] == 21.0  # tag2 finished first (innermost), then tag1


class Named(Recorder):
    """Remembers the client steps its instructions name."""

    def fit(self, params: Params, data: Split, instructions: FitInstructions) -> FitResult:
        self.named = instructions.client_steps
        return super().fit(params, data, instructions)


def test_the_task_sees_the_names_of_the_steps_around_it() -> None:
    task = Named()
    fit_with_steps(task, data(), task.init_params(0), FitInstructions(1, 2, TrainConfig(), 0), (tag("1"), tag("2")))
    assert task.named == ("tag1", "tag2")


def test_without_steps_it_is_the_task_alone() -> None:
    task = Recorder()
    start = task.init_params(0)
    result = fit_with_steps(task, data(), start, FitInstructions(1, 2, TrainConfig(), 0))
    assert result.params.array_equal(start.map(lambda a: a + 1))


def test_a_name_a_client_does_not_know_is_refused_naming_those_it_runs() -> None:
    known = steps_by_name(builtin_client_steps())
    assert [s.name for s in resolve_steps(["scaffold", "fedper"], known)] == ["scaffold", "fedper"]
    with pytest.raises(TaskError, match=r"unknown client step\(s\) 'bogus'; this client runs: .*fedper.*scaffold"):
        resolve_steps(["fedper", "bogus"], known)


def test_head_names_default_to_the_last_layer() -> None:
    start = Recorder().init_params(0)
    assert head_names(start, "") == ["2.weight", "2.bias"]
    assert head_names(Params({"w": np.zeros(1), "b": np.zeros(1)}), "") == ["b"]


def test_fedper_keeps_the_head_on_the_client_and_trains_from_it_next_time() -> None:
    task = Recorder()
    start = task.init_params(0)
    options = {"fedper_head": "2."}
    steps = (fedper_client_step(),)
    update, state = fit_client(
        task, data(), start, round=1, train=TrainConfig(), run_seed=0, options=options, steps=steps
    )
    assert update.delta["0.weight"].tolist() == [1.0, 1.0]  # the body is shared
    assert update.delta["2.weight"].tolist() == [0.0, 0.0]  # the head never leaves
    assert state is not None and state["fedper"]["2.bias"].tolist() == [1.0]
    fit_client(
        task, data(), start, round=2, train=TrainConfig(), run_seed=0, options=options, client_state=state, steps=steps
    )
    assert task.seen[-1]["2.bias"].tolist() == [1.0]  # round 2 started from its own head
    assert task.seen[-1]["0.weight"].tolist() == [0.0, 0.0]  # and the global body


def test_finetune_evaluate_reports_the_tuned_models_test_figures() -> None:
    task = Recorder()
    options = {"finetune_steps": 3}
    steps = (personalizing(fedper_client_step()), FINETUNE_EVALUATE)
    state = {"fedper": Params({"2.weight": np.full(2, 5.0), "2.bias": np.full(1, 5.0)})}
    update, _ = fit_client(
        task,
        data(),
        task.init_params(0),
        round=1,
        train=TrainConfig(),
        run_seed=0,
        options=options,
        client_state=state,
        steps=steps,
    )
    # its own head (5), then one (recorded) fit that adds 1
    assert update.metrics["eval_loss"] == 6.0
    assert update.metrics["eval_accuracy"] == 0.5
    assert update.metrics["eval_examples"] == 4.0


def test_local_steps_trains_exactly_that_many_mini_batches_across_epochs() -> None:
    task = TorchTask(lambda: torch.nn.Linear(3, 2))
    split = Split(np.random.default_rng(0).random((7, 3), dtype=np.float32), np.arange(7) % 2)
    train = TrainConfig(epochs=1, batch_size=3)  # 3 batches an epoch
    for steps in (1, 5):
        result = task.fit(task.init_params(0), split, FitInstructions(1, 0, train, 3, options={"local_steps": steps}))
        assert result.metrics["steps"] == steps


def test_without_local_steps_the_standard_loop_is_unchanged() -> None:
    task = TorchTask(lambda: torch.nn.Linear(3, 2))
    split = Split(np.random.default_rng(0).random((7, 3), dtype=np.float32), np.arange(7) % 2)
    result = task.fit(task.init_params(0), split, FitInstructions(1, 0, TrainConfig(epochs=2, batch_size=3), 3))
    assert result.metrics["steps"] == 6
