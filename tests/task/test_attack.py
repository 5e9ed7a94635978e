"""Simulated attackers: who they are, and what each attack sends."""

from __future__ import annotations

import numpy as np
import pytest

from sheaf.core.config import AttackConfig, TrainConfig
from sheaf.core.errors import ConfigError
from sheaf.core.params import Params
from sheaf.data.dataset import ClientData, Split
from sheaf.task.attack import AttackedTask, attack_task, malicious_clients
from sheaf.task.base import EvalResult, FitInstructions, FitResult
from sheaf.task.client import fit_client


class Honest:
    """Moves w by +1 per unit of label mean, so label flipping shows in the update."""

    def init_params(self, seed: int) -> Params:
        return Params({"w": np.zeros(3, np.float32)})

    def fit(self, params: Params, data: Split, instructions: FitInstructions) -> FitResult:
        return FitResult(params.map(lambda a: a + float(data.y.mean())), len(data), {"steps": 1.0})

    def evaluate(self, params: Params, data: Split) -> EvalResult:
        return EvalResult(0.0, len(data))


def client(cid: int) -> ClientData:
    split = Split(np.zeros((4, 1), np.float32), np.array([0, 0, 0, 3]))  # label mean 0.75
    return ClientData(cid, split, split)


def delta(task: object, cid: int, round: int = 1) -> np.ndarray:
    update, _ = fit_client(
        task, client(cid), Params({"w": np.ones(3, np.float32)}), round=round, train=TrainConfig(), run_seed=0
    )  # type: ignore[arg-type]
    return update.delta["w"]


def test_the_malicious_clients_are_an_exact_share_fixed_by_the_seed() -> None:
    chosen = malicious_clients(100, 0.2, seed=3)
    assert len(chosen) == 20 and len(set(chosen.tolist())) == 20
    assert chosen.tolist() == malicious_clients(100, 0.2, seed=3).tolist()
    assert chosen.tolist() != malicious_clients(100, 0.2, seed=4).tolist()
    assert malicious_clients(10, 0.0, seed=3).tolist() == []


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("sign_flip", -7.5),
        ("scale", 7.5),
        ("label_flip", 2.25),
    ],  # honest: +0.75; flipped labels 3, 3, 3, 0
)
def test_each_attack_sends_what_it_says(kind: str, expected: float) -> None:
    task = AttackedTask(Honest(), AttackConfig(name=kind, scale=10.0), malicious=[7], num_classes=4, seed=0)
    np.testing.assert_allclose(delta(task, 7), expected, rtol=1e-6)
    np.testing.assert_array_equal(delta(task, 8), delta(Honest(), 8))  # honest clients are untouched


def test_the_gaussian_attack_sends_seeded_noise_instead_of_an_update() -> None:
    task = AttackedTask(Honest(), AttackConfig(name="gaussian", noise_std=2.0), malicious=[7], num_classes=4, seed=0)
    first, again, later = delta(task, 7), delta(task, 7), delta(task, 7, round=2)
    np.testing.assert_array_equal(first, again)
    assert not np.allclose(first, later)
    assert not np.allclose(first, 0.75)


def test_no_attack_leaves_the_task_as_it_is() -> None:
    honest = Honest()
    assert attack_task(honest, AttackConfig(), 10, 4, 0) is honest


def test_label_flipping_needs_classes() -> None:
    with pytest.raises(ConfigError, match="attack.name=label_flip needs a classification dataset"):
        attack_task(Honest(), AttackConfig(name="label_flip"), 10, 0, 0)


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ({"name": "backdoor"}, "attack.name must be one of: none, sign_flip, scale, gaussian, label_flip"),
        ({"malicious_fraction": 1.5}, "attack.malicious_fraction must be in [0, 1]"),
        ({"scale": 0.0}, "attack.scale must be > 0"),
    ],
)
def test_bad_attack_settings_are_one_clear_error(setting: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        AttackConfig(**setting)  # type: ignore[arg-type]


def test_per_round_attackers_are_exactly_the_share_of_every_rounds_cohort() -> None:
    from sheaf.core.sampling import sample_cohort
    from sheaf.task.attack import malicious_in_round

    for round in range(1, 30):
        chosen = malicious_in_round(population=100, cohort=10, fraction=0.2, seed=5, round=round)
        assert len(chosen) == 2
        assert set(chosen.tolist()) <= set(sample_cohort(100, 10, seed=5, round=round).tolist())
    assert (
        malicious_in_round(100, 10, 0.2, seed=5, round=2).tolist()
        == malicious_in_round(100, 10, 0.2, seed=5, round=2).tolist()
    )


def test_a_per_round_attacked_task_attacks_only_in_the_rounds_that_chose_the_client() -> None:
    from sheaf.task.attack import malicious_in_round

    task = attack_task(Honest(), AttackConfig(name="sign_flip", per_round=True, scale=10.0), 20, 4, seed=1, cohort=5)
    for round in (1, 2, 3):
        bad = set(malicious_in_round(20, 5, 0.2, seed=1, round=round).tolist())
        for cid in range(20):
            expected = -7.5 if cid in bad else 0.75
            np.testing.assert_allclose(delta(task, cid, round), expected)
