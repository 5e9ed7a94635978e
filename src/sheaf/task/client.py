"""The client side of a round: run the task on local data and package the result.

Backends (in-process, worker pools) and the deployed client process all call these two
functions, so a client does the same thing wherever it runs. A failure in user code is
returned as a :class:`~sheaf.core.errors.ClientFailure` value — the round loop treats it
as a dropout — rather than raised through the backend.

Example:
    >>> import numpy as np, torch
    >>> from sheaf.core.config import TrainConfig
    >>> from sheaf.data.dataset import ClientData, Split
    >>> from sheaf.task.torch_task import TorchTask
    >>> task = TorchTask(lambda: torch.nn.Linear(2, 2))
    >>> data = ClientData(3, Split(np.ones((4, 2), np.float32), np.array([0, 1, 0, 1])),
    ...                   Split(np.ones((2, 2), np.float32), np.array([0, 1])))
    >>> update, state = fit_client(task, data, task.init_params(0), round=1, train=TrainConfig(), run_seed=0)
    >>> update.client_id, update.num_examples
    (3, 4)
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from sheaf.core.config import TrainConfig
from sheaf.core.errors import ClientFailure
from sheaf.core.params import Params
from sheaf.core.rng import Purpose, seed_for
from sheaf.core.update import Scalar, TensorGroups, Update, validate_metrics
from sheaf.data.dataset import ClientData
from sheaf.task.base import EvalResult, FitInstructions, Task
from sheaf.task.client_steps import ClientStep, fit_with_steps
from sheaf.task.metric_log import collecting, with_logged

__all__ = ["evaluate_client", "fit_client", "fit_instructions"]


def fit_instructions(
    run_seed: int,
    round: int,
    client_id: int,
    train: TrainConfig,
    options: Mapping[str, Scalar] | None = None,
    payload: TensorGroups | None = None,
    client_state: TensorGroups | None = None,
    *,
    seed: int | None = None,
) -> FitInstructions:
    """The instructions for one client in one round, with its own derived seed.

    ``seed``, if given, is that seed already derived (a deployed client is sent its own
    seed for each round, never the run seed); otherwise it is derived from ``run_seed``.
    """
    if seed is None:
        seed = seed_for(run_seed, Purpose.FIT, round=round, client=client_id)
    return FitInstructions(
        round, client_id, train, seed, dict(options or {}), dict(payload or {}), dict(client_state or {})
    )


def fit_client(
    task: Task,
    data: ClientData,
    params: Params,
    *,
    round: int,
    train: TrainConfig,
    run_seed: int,
    options: Mapping[str, Scalar] | None = None,
    payload: TensorGroups | None = None,
    client_state: TensorGroups | None = None,
    steps: Sequence[ClientStep] = (),
    seed: int | None = None,
) -> tuple[Update, TensorGroups | None]:
    """Train one client; return its update (delta from ``params``) and its new state.

    The client ``steps`` (e.g. SCAFFOLD's client half) run around ``task.fit``, the first
    outermost (:mod:`sheaf.task.client_steps`). ``seed`` is the client's training seed for
    the round if it was derived elsewhere (:func:`fit_instructions`).

    Returns:
        The update to send, and the client's new persistent state (None: unchanged).

    Raises:
        ClientFailure: if the task raised, or returned params that do not match.
    """
    instructions = fit_instructions(run_seed, round, data.client_id, train, options, payload, client_state, seed=seed)
    try:
        with collecting() as logged:
            result = fit_with_steps(task, data, params, instructions, steps)
        metrics = validate_metrics(with_logged(result.metrics, logged), source=f"client {data.client_id} fit metrics")
        if result.encoded is not None:  # only the encoding leaves: the server half decodes it
            update = Update(
                data.client_id, Params({}), result.num_examples, metrics, dict(result.extras), result.encoded
            )
        else:
            update = Update.from_params(
                data.client_id, params, result.params, result.num_examples, metrics, result.extras
            )
        return update, result.client_state
    except Exception as exc:  # user code: anything may go wrong; report it per client
        raise ClientFailure(data.client_id, f"fit failed: {type(exc).__name__}: {exc}") from exc


def evaluate_client(task: Task, data: ClientData, params: Params) -> EvalResult:
    """Evaluate ``params`` on the client's local test split, if the client's task allows it
    (its optional ``check_evaluation``, see :class:`~sheaf.task.base.Task`).

    Raises:
        ClientFailure: if the task refused, raised or returned unusable metrics.
    """
    try:
        check = getattr(task, "check_evaluation", None)
        if callable(check):
            check(data.client_id)  # the client's own policy may refuse before anything is computed
        with collecting() as logged:
            result = task.evaluate(params, data.test)
        metrics = validate_metrics(with_logged(result.metrics, logged), source=f"client {data.client_id} evaluation")
        if math.isinf(result.loss):
            raise ValueError("evaluation loss is infinite")
        return EvalResult(float(result.loss), int(result.num_examples), metrics)
    except Exception as exc:
        raise ClientFailure(data.client_id, f"evaluate failed: {type(exc).__name__}: {exc}") from exc
