"""Personalised evaluation: each client's own model beside the global one.

On federated-evaluation rounds, when ``personalization.finetune_steps`` is k > 0 or the
strategy keeps personal models (FedPer's head, Ditto's personal model), every evaluated
client also evaluates its own model. Both halves are here: the loop's side
(:func:`personalized_evaluation`) and the client's (the ``finetune_evaluate`` client step,
:data:`FINETUNE_EVALUATE`). Starting from the global params, the client swaps in the
model its personal steps give it (:func:`~sheaf.task.client_steps.personalizing`), trains
k mini-batch steps on its training split (none if k = 0) and evaluates on its local test
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
    >>> [step.name for step in personalized_evaluation_steps(fedper())]
    ['fedper:personal', 'finetune_evaluate']
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from sheaf.backends.base import Backend, Cohort
from sheaf.core.config import RunConfig
from sheaf.core.errors import ClientFailure, TaskError
from sheaf.core.params import Params
from sheaf.core.rng import Purpose
from sheaf.core.update import Scalar
from sheaf.evaluation.fairness import summarize
from sheaf.evaluation.history import ClientRecord
from sheaf.run.store import RunStore
from sheaf.strategies.base import Strategy
from sheaf.task.base import FitInstructions, FitResult
from sheaf.task.client_steps import LOCAL_STEPS, ClientContext, ClientStep, FitFn, personalizing

__all__ = [
    "FINETUNE_EVALUATE",
    "PERSONALIZED",
    "personal_steps",
    "personalized_evaluation",
    "personalized_evaluation_steps",
    "wants_personalization",
]

#: Phase of the per-client records, and prefix of the summaries in ``RoundRecord.federated``.
PERSONALIZED = "personalized"


def _finetune_evaluate(fit: FitFn, params: Params, instructions: FitInstructions, client: ClientContext) -> FitResult:
    steps = instructions.options.get("finetune_steps", 0)
    if isinstance(steps, bool) or not isinstance(steps, int | float) or steps < 0:
        raise TaskError(f"finetune_steps must be a whole number >= 0, got {steps!r}")
    result = FitResult(params, 0)
    if steps > 0:
        # Its own stream: fine-tuning must not replay the shuffles of this round's training.
        seed = int(np.random.SeedSequence([instructions.seed, int(Purpose.EVALUATE)]).generate_state(1)[0])
        options = {**instructions.options, LOCAL_STEPS: int(steps)}
        result = fit(params, dataclasses.replace(instructions, options=options, seed=seed))
    evaluation = client.task.evaluate(result.params, client.data.test)
    metrics = {
        **result.metrics,
        "eval_loss": float(evaluation.loss),
        "eval_examples": float(evaluation.num_examples),
        **{f"eval_{name}": float(value) for name, value in evaluation.metrics.items()},
    }
    return dataclasses.replace(result, metrics=metrics)


#: The client half of personalised evaluation: train ``options["finetune_steps"]``
#: mini-batch steps on the training split (none if 0), evaluate the result on the local
#: test split and report ``eval_loss``, ``eval_examples`` and ``eval_<metric>``.
FINETUNE_EVALUATE = ClientStep("finetune_evaluate", _finetune_evaluate)


def personal_steps(strategy: Strategy) -> list[ClientStep]:
    """The strategy's client steps that shape the model a client uses (e.g. ``fedper``)."""
    return [step for step in strategy.client_steps if step.personal]


def personalized_evaluation_steps(strategy: Strategy) -> tuple[ClientStep, ...]:
    """What a client runs to evaluate its own model: its personal steps' models, then
    ``finetune_evaluate``."""
    return (*(personalizing(step) for step in personal_steps(strategy)), FINETUNE_EVALUATE)


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
    train = config.train.for_round(round)
    if tuning.finetune_lr > 0:
        train = dataclasses.replace(train, lr=tuning.finetune_lr)
    options: dict[str, Scalar] = {**strategy.client_options, "finetune_steps": tuning.finetune_steps}
    ids = list(clients)
    cohort = Cohort(
        round, ids, params, train, options, {}, store.client_states(ids), steps=personalized_evaluation_steps(strategy)
    )
    outcome = backend.fit(cohort)
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
