"""A data owner's own privacy ledger and policy: what it has spent, and what it allows.

A client can be given its own epsilon limit. It keeps a :class:`PrivacyLedger` of the
rounds it has been charged for — in its persistent client state, so on its own disk in
deployment and in the run store in simulation — and, before training, refuses a round
that would take it past its limit (client step ``privacy_budget``). The server sees the
refusal as a dropout with its reason. Such a client also refuses what nothing accounts:
training in a round that does not ask it to check its budget, and every evaluation (its
raw test metrics would leave it un-noised).

What a round costs a client, from what it is told about the round's mechanism:

- central DP (``poisson`` or ``fixed`` sampling): the run's own, amplified, accounting. A
  client contacted in round r charges every round since the last one it was charged for
  (it cannot tell the rounds it was not sampled in from those it was), so its ledger
  reads exactly the run's epsilon at r. A client whose next round would exceed its limit
  stops contributing: its data is then used only in rounds whose cumulative epsilon is
  within the limit, a cut-off fixed by public numbers, so its guarantee is that epsilon.
- local DP: each update it sends is a Gaussian mechanism of its own, with no
  amplification (the server knows who sent it); the ledger composes the updates it sent.

The limits themselves are the *client's* settings, never the server's: a
:class:`ClientPrivacy` policy held by the client's task (:func:`with_client_privacy`
wraps a task with them; in simulation ``[privacy] client_budget(s)`` does that for every
simulated client). The policy also says whether the client accepts *seeded* noise for
local DP — only a simulated client should, since whoever knows the seed can remove it.

Example:
    >>> from sheaf.privacy.accountant import RoundMechanism
    >>> m = RoundMechanism("poisson", 1.0, rate=0.1)
    >>> ledger = PrivacyLedger().charged(m, round=5)
    >>> ledger.last_round, ledger.events, round(ledger.epsilon(1e-5), 3)
    (5, ((RoundMechanism(kind='poisson', noise_multiplier=1.0, rate=0.1, population=0, cohort=0), 5),), 2.902)
    >>> PrivacyLedger.from_params(ledger.to_params()) == ledger
    True

References:
    Feldman, Zrnic. Individual Privacy Accounting via a Rényi Filter. NeurIPS 2021.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from sheaf.core.config import PrivacyConfig
from sheaf.core.errors import TaskError
from sheaf.core.params import Params
from sheaf.data.dataset import Split
from sheaf.privacy.accountant import MECHANISM_KINDS, RoundMechanism, epsilon_of
from sheaf.task.base import EvalResult, FitInstructions, FitResult, Task, prepare_worker

__all__ = [
    "LEDGER_KEY",
    "BudgetExceeded",
    "ClientPrivacy",
    "PrivacyLedger",
    "PrivateClientTask",
    "client_privacy",
    "simulated_client_privacy",
    "with_client_privacy",
]

#: The client-state group holding a client's ledger.
LEDGER_KEY = "privacy_ledger"


class BudgetExceeded(TaskError):
    """A client refuses a round that would take it past its privacy budget."""


@dataclass(frozen=True)
class ClientPrivacy:
    """A client's own privacy settings.

    Attributes:
        budget: its epsilon limit (None: no limit, no ledger kept).
        delta: the delta of its limit (None: the run's delta).
        seeded_noise: accept seeded (reproducible) noise for local DP when the server
            asks for it; True only for simulated clients.
    """

    budget: float | None = None
    delta: float | None = None
    seeded_noise: bool = False


@dataclass(frozen=True)
class PrivacyLedger:
    """The rounds a client has been charged for.

    Attributes:
        last_round: the last round charged (0: none).
        events: ``(mechanism, rounds)`` pairs charged so far.
    """

    last_round: int = 0
    events: tuple[tuple[RoundMechanism, int], ...] = ()

    def charged(self, mechanism: RoundMechanism, round: int) -> PrivacyLedger:
        """The ledger after taking part in ``round`` (see the module docstring for the cost)."""
        count = 1 if mechanism.kind == "local" else max(round - self.last_round, 0)
        merged = dict(self.events)
        if count:
            merged[mechanism] = merged.get(mechanism, 0) + count
        return PrivacyLedger(max(round, self.last_round), tuple(merged.items()))

    def epsilon(self, delta: float, accountant: str = "rdp") -> float:
        """The epsilon spent at ``delta``."""
        return epsilon_of(self.events, delta, accountant)

    def to_params(self) -> Params:
        """The ledger as tensors (for client state): one row per mechanism."""
        rows = [
            [float(MECHANISM_KINDS.index(m.kind)), m.noise_multiplier, m.rate, m.population, m.cohort, count]
            for m, count in self.events
        ]
        table = np.array(rows, np.float64).reshape(len(rows), 6)
        return Params({"last_round": np.array([float(self.last_round)]), "events": table})

    @classmethod
    def from_params(cls, tensors: Mapping[str, Any]) -> PrivacyLedger:
        """Rebuild a ledger from :meth:`to_params`.

        Raises:
            TaskError: if the tensors are not a ledger.
        """
        try:
            table = np.asarray(tensors["events"], np.float64).reshape(-1, 6)
            events = tuple(
                (RoundMechanism(MECHANISM_KINDS[int(k)], float(z), float(q), int(n), int(m)).check(), int(c))
                for k, z, q, n, m, c in table
            )
            return cls(int(np.asarray(tensors["last_round"]).reshape(-1)[0]), events)
        except (KeyError, IndexError, ValueError, TypeError) as exc:
            raise TaskError(f"the client's privacy ledger is unreadable: {exc}") from None


class PrivateClientTask:
    """A task whose clients carry their own privacy settings (``ClientPrivacy``).

    Everything else is the wrapped task's. Backends send the task to wherever clients run,
    so every simulated client keeps its settings in worker processes too.

    Args:
        task: the task to wrap.
        budgets: epsilon limit by client id.
        default_budget: the limit of every other client (None: no limit).
        seeded_noise: whether the clients accept seeded noise (simulation).
        delta: the delta of the limits (None: the run's).
    """

    def __init__(
        self,
        task: Task,
        budgets: Mapping[int, float] | None = None,
        default_budget: float | None = None,
        seeded_noise: bool = False,
        delta: float | None = None,
    ) -> None:
        self.task = task
        self.budgets = {int(k): float(v) for k, v in (budgets or {}).items()}
        self.default_budget = default_budget
        self.seeded_noise = seeded_noise
        self.delta = delta

    def client_privacy(self, client_id: int) -> ClientPrivacy:
        """The privacy settings of ``client_id``."""
        return ClientPrivacy(self.budgets.get(client_id, self.default_budget), self.delta, self.seeded_noise)

    def setup_worker(self, threads: int) -> None:
        """Let the wrapped task set up the worker."""
        prepare_worker(self.task, threads)

    def init_params(self, seed: int) -> Params:
        """The wrapped task's initial params."""
        return self.task.init_params(seed)

    def fit(self, params: Params, data: Split, instructions: FitInstructions) -> FitResult:
        """The wrapped task's training, if the round accounts this client's budget.

        Raises:
            BudgetExceeded: if the client has a budget but the server did not ask it to
                check it (``privacy_budget``): a run without differential privacy, or one
                that would spend its privacy unaccounted. It refuses rather than train.
        """
        budget = self.client_privacy(instructions.client_id).budget
        if budget is not None and "privacy_budget" not in instructions.client_steps:
            raise BudgetExceeded(
                f"client {instructions.client_id} has a privacy budget ({budget:g}) but round {instructions.round} "
                "does not account it (the run is not differentially private): it refuses to train"
            )
        return self.task.fit(params, data, instructions)

    def check_evaluation(self, client_id: int) -> None:
        """Refuse to evaluate for a client with a budget: nothing accounts an evaluation.

        Federated evaluation sends the client's raw test loss, metrics and test-set size;
        no mechanism noises them and no ledger charges them, so a client whose owner set a
        limit never sends them, whatever the server asks.

        Raises:
            BudgetExceeded: if ``client_id`` has a privacy budget.
        """
        budget = self.client_privacy(client_id).budget
        if budget is not None:
            raise BudgetExceeded(
                f"client {client_id} has a privacy budget ({budget:g}) and an evaluation would release its raw "
                "test metrics unaccounted: it refuses to evaluate"
            )

    def evaluate(self, params: Params, data: Split) -> EvalResult:
        """The wrapped task's evaluation (clients ask :meth:`check_evaluation` first; the
        server's central evaluation on its own test set goes straight here)."""
        return self.task.evaluate(params, data)


def with_client_privacy(
    task: Task,
    budgets: Mapping[int, float] | None = None,
    default_budget: float | None = None,
    *,
    seeded_noise: bool = False,
    delta: float | None = None,
) -> PrivateClientTask:
    """``task`` with its clients' privacy settings (see :class:`PrivateClientTask`).

    Example:
        >>> class Dummy:
        ...     pass
        >>> client_privacy(with_client_privacy(Dummy(), {3: 1.5}, 4.0), 3).budget
        1.5
    """
    return PrivateClientTask(task, budgets, default_budget, seeded_noise, delta)


def client_privacy(task: object, client_id: int) -> ClientPrivacy:
    """The privacy settings of ``client_id`` held by ``task`` or a task it wraps.

    A task without settings means: no budget, and secure noise only.
    """
    seen = 0
    while task is not None and seen < 16:
        policy = getattr(task, "client_privacy", None)
        if callable(policy):
            found = policy(client_id)
            if isinstance(found, ClientPrivacy):
                return found
        task = getattr(task, "task", None)
        seen += 1
    return ClientPrivacy()


def simulated_client_privacy(task: Task, config: PrivacyConfig) -> PrivateClientTask:
    """``task`` with the simulated clients' settings from ``[privacy]``: their budgets, and
    acceptance of seeded noise (a simulation is reproducible from its seed).

    Example:
        >>> from sheaf.core.config import PrivacyConfig
        >>> cfg = PrivacyConfig(mode="central", client_budget=3.0, client_budgets={"2": 1.0})
        >>> wrapped = simulated_client_privacy(object(), cfg)
        >>> wrapped.client_privacy(2).budget, wrapped.client_privacy(5).budget, wrapped.seeded_noise
        (1.0, 3.0, True)
    """
    budgets = {int(k): float(v) for k, v in config.client_budgets.items()}
    return with_client_privacy(task, budgets, config.client_budget or None, seeded_noise=True)
