"""Client halves of personalisation: FedPer's personal head, and fine-tuned evaluation.

- ``fedper`` (personal): the client trains the global body with *its own* head (the
  tensors named by ``options["fedper_head"]``, kept as client state ``"fedper"``; the
  global head the first time), keeps the trained head, and sends a delta whose head part is
  zero — the head never leaves the client, and the server averages bodies only.
- ``finetune_evaluate``: trains ``options["finetune_steps"]`` mini-batch steps on the
  client's training split (none if 0), evaluates the result on its local test split and
  reports ``eval_loss``, ``eval_examples`` and ``eval_<metric>``. The round loop runs it,
  after any personal steps, to evaluate each client's personalised model; nothing it
  produces is aggregated or kept.

Example:
    >>> import numpy as np
    >>> from sheaf.core.params import Params
    >>> p = Params({"0.weight": np.zeros(2), "0.bias": np.zeros(1), "2.weight": np.zeros(2), "2.bias": np.zeros(1)})
    >>> head_names(p, "")
    ['2.weight', '2.bias']
    >>> head_names(p, "0.bias, 2.")
    ['0.bias', '2.weight', '2.bias']

References:
    Arivazhagan, Aggarwal, Singh, Choudhary. Federated Learning with Personalization
    Layers. arXiv:1912.00818, 2019.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from sheaf.core.errors import TaskError
from sheaf.core.params import Params
from sheaf.core.rng import Purpose
from sheaf.task.base import FitInstructions, FitResult
from sheaf.task.client_steps import LOCAL_STEPS, ClientContext, ClientStep, FitFn, merged_state

__all__ = ["FEDPER_KEY", "PERSONAL_STEPS", "head_names"]

#: Client-state group holding FedPer's personal head.
FEDPER_KEY = "fedper"


def head_names(params: Params, spec: str) -> list[str]:
    """The personal tensors: names starting with any comma-separated prefix of ``spec``.

    An empty spec means the last layer: the tensors whose module prefix (the name up to its
    last dot) is that of the model's last tensor.

    Raises:
        TaskError: if the spec names no tensor of the model.
    """
    names = list(params)
    if not spec.strip():
        last = names[-1].rpartition(".")[0]
        return [n for n in names if n.rpartition(".")[0] == last] if last else names[-1:]
    prefixes = [p.strip() for p in spec.split(",") if p.strip()]
    chosen = [n for n in names if any(n.startswith(p) for p in prefixes)]
    if not chosen:
        raise TaskError(f"fedper head {spec!r} names no tensor of the model; its tensors are {names}")
    return chosen


def _fedper(fit: FitFn, params: Params, instructions: FitInstructions, client: ClientContext) -> FitResult:
    head = head_names(params, str(instructions.options.get("fedper_head", "")))
    own = instructions.client_state.get(FEDPER_KEY)
    if own is not None and set(own) == set(head) and all(own[n].shape == params[n].shape for n in head):
        start = Params({n: own[n].astype(params[n].dtype) if n in own else params[n] for n in params})
    else:
        start = params
    result = fit(start, instructions)
    trained = result.params
    personal = Params({n: trained[n] for n in head})
    # The head never leaves the client: its part of the delta is zero.
    sent = Params({n: params[n] if n in personal else trained[n] for n in params})
    return dataclasses.replace(
        result, params=sent, client_state=merged_state(instructions, result, **{FEDPER_KEY: personal})
    )


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


#: The steps this module registers.
PERSONAL_STEPS = (ClientStep(FEDPER_KEY, _fedper, personal=True), ClientStep("finetune_evaluate", _finetune_evaluate))
