"""Personalised evaluation: each client's own model beside the global one.

On federated-evaluation rounds, when ``personalization.finetune_steps`` is k > 0 or the
strategy keeps personal layers (FedPer), every evaluated client also runs the
``finetune_evaluate`` client step: starting from the global params — through the
strategy's personal client steps, so a FedPer client uses its own head — it trains k
mini-batch steps on its training split (none if k = 0) and evaluates on its local test
split. The work goes to the backend as an ordinary cohort, so it runs wherever clients
run; nothing it produces is aggregated or kept (client states are left as they were).

The figures land beside the global model's: ``RoundRecord.federated`` gains
``personalized_<metric>`` summaries (``personalized_accuracy``, ``personalized_loss``), and
the run store holds per-client records of phase ``personalized``.

Example:
    >>> from sheaf.core.config import RunConfig, PersonalizationConfig
    >>> from sheaf.strategies import fedavg, fedper
    >>> wants_personalization(RunConfig(), fedavg()), wants_personalization(RunConfig(), fedper())
    (False, True)
    >>> cfg = RunConfig(personalization=PersonalizationConfig(finetune_steps=5))
    >>> wants_personalization(cfg, fedavg())
    True
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from sheaf.backends.base import Backend, Cohort
from sheaf.core.config import RunConfig
from sheaf.core.errors import ClientFailure
from sheaf.core.params import Params
from sheaf.core.update import Scalar
from sheaf.evaluation.fairness import summarize
from sheaf.evaluation.history import ClientRecord
from sheaf.run.store import RunStore
from sheaf.strategies.base import Strategy
from sheaf.task.client_steps import CLIENT_STEPS_OPTION, client_step

__all__ = ["PERSONALIZED", "personal_steps", "personalized_evaluation", "wants_personalization"]

#: Phase of the per-client records, and prefix of the summaries in ``RoundRecord.federated``.
PERSONALIZED = "personalized"


def personal_steps(strategy: Strategy) -> list[str]:
    """The strategy's client steps that shape the model a client uses (e.g. ``fedper``)."""
    return [name for name in strategy.client_steps if client_step(name).personal]


def wants_personalization(config: RunConfig, strategy: Strategy) -> bool:
    """Whether the run evaluates personalised models (fine-tuning asked, or personal layers)."""
    return config.personalization.finetune_steps > 0 or bool(personal_steps(strategy))


def personalized_evaluation(
    backend: Backend,
    strategy: Strategy,
    config: RunConfig,
    store: RunStore,
    round: int,
    params: Params,
    clients: Sequence[int],
) -> tuple[dict[str, dict[str, float]], list[ClientRecord], list[ClientFailure]]:
    """Evaluate each client's personalised model on its local test split.

    Args:
        backend: a started backend.
        strategy: the run's strategy (its client options and personal steps apply).
        config: the run config (``personalization`` and ``train``).
        store: the run store (the clients' persistent states).
        round: the round being evaluated.
        params: the global params after the round.
        clients: the clients to evaluate, in increasing order.

    Returns:
        ``personalized_<metric>`` fairness summaries, per-client records of phase
        ``personalized``, and the clients that failed.
    """
    tuning = config.personalization
    train = config.train
    if tuning.finetune_lr > 0:
        train = dataclasses.replace(train, lr=tuning.finetune_lr)
    options: dict[str, Scalar] = {
        **strategy.client_options,
        CLIENT_STEPS_OPTION: ",".join([*personal_steps(strategy), "finetune_evaluate"]),
        "finetune_steps": tuning.finetune_steps,
    }
    ids = list(clients)
    outcome = backend.fit(Cohort(round, ids, params, train, options, {}, store.client_states(ids)))
    records = []
    for update in sorted(outcome.updates, key=lambda u: u.client_id):
        metrics = {name[5:]: value for name, value in update.metrics.items() if name.startswith("eval_")}
        examples = int(metrics.pop("examples", 0))
        records.append(ClientRecord(update.client_id, PERSONALIZED, examples, metrics))
    names = sorted({name for r in records for name in r.metrics})
    summaries = {
        f"{PERSONALIZED}_{name}": summarize(
            [r.metrics.get(name, float("nan")) for r in records], [r.num_examples for r in records]
        ).as_dict()
        for name in names
    }
    return summaries, records, outcome.failures
