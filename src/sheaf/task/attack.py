"""Simulated attacks: a task wrapper whose malicious clients send poisoned updates.

To judge a defence, a share of the clients behave maliciously: either a fixed set chosen
once from the run seed, or (``attack.per_round``) exactly that share of every round's
cohort, chosen from (seed, round). Either way the choice comes from ``Purpose.ATTACK``
streams, so every backend and every rerun picks the same clients. :class:`AttackedTask` wraps the user's task: honest clients run it unchanged;
a malicious one

- ``sign_flip``: trains honestly, then sends ``-scale`` times its update;
- ``scale``: trains honestly, then sends ``scale`` times its update (boosting);
- ``gaussian``: sends Gaussian noise of standard deviation ``noise_std`` instead of an
  update (drawn from its own stream for the round);
- ``label_flip``: trains on flipped labels ``num_classes - 1 - y``.

Because it is a task, the attack runs wherever clients run — in this process, in worker
processes, or in a deployed client — and the backends need not know about it. Client
steps (e.g. SCAFFOLD's) still run around it, as a real attacker's software would.

Example:
    >>> malicious_clients(population=10, fraction=0.2, seed=0).tolist()
    [1, 4]

References:
    Blanchard et al. Machine Learning with Adversaries: Byzantine Tolerant Gradient
    Descent. NeurIPS 2017 (Gaussian attack). Bhagoji, Chakraborty, Mittal, Calo. Analyzing
    Federated Learning through an Adversarial Lens. ICML 2019 (boosting). Fang, Cao, Jia,
    Gong. Local Model Poisoning Attacks to Byzantine-Robust Federated Learning. USENIX
    Security 2020 (label flipping).
"""

from __future__ import annotations

import builtins
import dataclasses
from collections.abc import Iterable

import numpy as np
import numpy.typing as npt

from sheaf.core.config import AttackConfig
from sheaf.core.errors import ConfigError, TaskError
from sheaf.core.params import Params
from sheaf.core.rng import Purpose, stream
from sheaf.core.sampling import sample_cohort
from sheaf.data.dataset import Split
from sheaf.task.base import EvalResult, FitInstructions, FitResult, Task, prepare_worker

__all__ = ["AttackedTask", "attack_task", "malicious_clients", "malicious_in_round"]


def malicious_clients(population: int, fraction: float, seed: int) -> npt.NDArray[np.int64]:
    """The malicious clients: ``round(fraction * population)`` ids drawn from the seed, sorted."""
    count = round(fraction * population)
    rng = stream(seed, Purpose.ATTACK)
    return np.sort(rng.choice(population, size=count, replace=False)).astype(np.int64)


def malicious_in_round(population: int, cohort: int, fraction: float, seed: int, round: int) -> npt.NDArray[np.int64]:
    """The malicious clients of one round when attackers are drawn per round.

    Exactly ``round(fraction * cohort)`` of the round's sampled clients (the cohort the
    loop samples from (seed, round)), chosen from (seed, round), sorted.

    Example:
        >>> malicious_in_round(population=100, cohort=10, fraction=0.2, seed=0, round=3).size
        2
    """
    sampled = sample_cohort(population, cohort, seed=seed, round=round)
    rng = stream(seed, Purpose.ATTACK, round=round)
    return np.sort(rng.choice(sampled, size=builtins.round(fraction * cohort), replace=False)).astype(np.int64)


class AttackedTask:
    """A task whose malicious clients poison what they send; the others are untouched.

    Args:
        task: the honest task.
        attack: which attack, and its strength.
        malicious: ids of the malicious clients (a fixed set; empty with ``per_round``).
        num_classes: classes of the labels (for ``label_flip``).
        seed: the run seed (for ``gaussian`` noise and per-round choices).
        population: number of clients (for per-round choices).
        cohort: clients sampled per round (for per-round choices).
    """

    def __init__(
        self,
        task: Task,
        attack: AttackConfig,
        malicious: Iterable[int],
        num_classes: int,
        seed: int,
        population: int = 0,
        cohort: int = 0,
    ) -> None:
        self.task = task
        self.attack = attack
        self.malicious = frozenset(int(c) for c in malicious)
        self.num_classes = num_classes
        self.seed = seed
        self.population = population
        self.cohort = cohort
        self._round: tuple[int, frozenset[int]] = (-1, frozenset())

    def is_malicious(self, client_id: int, round: int) -> bool:
        """Whether ``client_id`` attacks in ``round``."""
        if not self.attack.per_round:
            return client_id in self.malicious
        if self._round[0] != round:
            chosen = malicious_in_round(self.population, self.cohort, self.attack.malicious_fraction, self.seed, round)
            self._round = (round, frozenset(int(c) for c in chosen))
        return client_id in self._round[1]

    def setup_worker(self, threads: int) -> None:
        """Let the wrapped task set up the worker."""
        prepare_worker(self.task, threads)

    def init_params(self, seed: int) -> Params:
        """The wrapped task's initial params."""
        return self.task.init_params(seed)

    def evaluate(self, params: Params, data: Split) -> EvalResult:
        """Evaluation is honest: it measures the model, not the client."""
        return self.task.evaluate(params, data)

    def fit(self, params: Params, data: Split, instructions: FitInstructions) -> FitResult:
        """Train honestly, or mount the attack if this client is malicious."""
        if not self.is_malicious(instructions.client_id, instructions.round):
            return self.task.fit(params, data, instructions)
        kind = self.attack.name
        if kind == "label_flip":
            if not np.issubdtype(data.y.dtype, np.integer):
                raise TaskError("the label_flip attack needs integer class labels")
            flipped = (self.num_classes - 1 - data.y).astype(data.y.dtype)
            return self.task.fit(params, Split(data.x, flipped), instructions)
        result = self.task.fit(params, data, instructions)
        if kind == "gaussian":
            rng = stream(self.seed, Purpose.ATTACK, round=instructions.round, client=instructions.client_id)
            poisoned = Params(
                {n: (a + rng.normal(0.0, self.attack.noise_std, a.shape)).astype(a.dtype) for n, a in params.items()}
            )
        else:
            factor = -self.attack.scale if kind == "sign_flip" else self.attack.scale
            poisoned = params + (result.params - params) * factor
        return dataclasses.replace(result, params=poisoned)


def attack_task(
    task: Task, attack: AttackConfig, population: int, num_classes: int, seed: int, cohort: int = 0
) -> Task:
    """``task`` wrapped in the configured attack, or ``task`` itself when there is none.

    Raises:
        ConfigError: if ``label_flip`` is asked of a dataset without classes.
    """
    if attack.name == "none":
        return task
    if attack.name == "label_flip" and num_classes < 2:
        raise ConfigError("attack.name=label_flip needs a classification dataset (at least 2 classes)")
    if attack.per_round:
        if cohort < 1:
            raise ConfigError("attack.per_round needs the cohort size")
        return AttackedTask(task, attack, (), num_classes, seed, population, cohort)
    return AttackedTask(task, attack, malicious_clients(population, attack.malicious_fraction, seed), num_classes, seed)
