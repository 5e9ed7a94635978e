"""The worker side of the pool and Ray backends: one task, many clients, replies as messages.

A :class:`ClientRunner` lives in a long-lived worker (a pool process or a Ray actor). It
holds the user's task — one model, reused for every client — and the federation's data,
and answers messages (see :mod:`sheaf.backends._wire`):

- ``round``: the round's settings, payload and params (the params come separately, from
  shared memory or the object store); a cohort that may be reduced starts an exact sum;
- ``fit``: train some clients with :func:`~sheaf.task.client.fit_client`, exactly as the
  inline backend does; one reply per client. In a reduced round a checked update is added
  to the worker's exact sum and only its metrics travel;
- ``flush``: send the exact sum (and start a new one);
- ``evaluate``: evaluate some clients; one reply per client.

Example:
    >>> import numpy as np
    >>> from sheaf.core.config import TrainConfig
    >>> from sheaf.core.params import Params
    >>> from sheaf.backends._wire import unpack
    >>> from sheaf.data.dataset import DatasetInfo, Federation, Split
    >>> class Mean:
    ...     def init_params(self, seed): return Params({"w": np.zeros(1)})
    ...     def fit(self, params, data, instructions):
    ...         from sheaf.task.base import FitResult
    ...         return FitResult(Params({"w": data.x.mean(axis=0)}), len(data))
    ...     def evaluate(self, params, data): ...
    >>> fed = Federation(DatasetInfo("toy", (1,), 2, ("a", "b")), np.arange(4.0).reshape(4, 1),
    ...                  np.zeros(4, np.int64), np.array([0, 2, 4]), np.array([2, 2]), Split(np.zeros((0, 1)), np.zeros(0)))
    >>> runner = ClientRunner(Mean(), fed, seed=0, threads=1)
    >>> runner.begin_round(round_header(1, TrainConfig(), {}, {}, reduce=True)[0], [], Params({"w": np.zeros(1)}))
    >>> [unpack(m)[0]["summed"] for m in runner.fit([0, 1], {})]
    [True, True]
    >>> header, arrays = unpack(runner.flush())
    >>> header["count"], header["weight"]
    (2, 4)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from sheaf.backends._wire import decode_groups, encode_groups, encode_params, pack
from sheaf.core.config import TrainConfig
from sheaf.core.errors import BackendError, ClientFailure, SheafError
from sheaf.core.exactsum import StackedSum
from sheaf.core.params import Params
from sheaf.core.update import Scalar, TensorGroups, check_update
from sheaf.data.dataset import Federation
from sheaf.task.base import Task, prepare_worker
from sheaf.task.client import evaluate_client, fit_client

__all__ = ["ClientRunner", "round_header"]


def round_header(
    round: int, train: TrainConfig, options: Mapping[str, Scalar], payload: TensorGroups, *, reduce: bool
) -> tuple[dict[str, Any], list[np.ndarray[Any, Any]]]:
    """The ``round`` message's header and tensors (the params travel separately)."""
    layout, arrays = encode_groups(payload)
    header = {
        "op": "round",
        "round": round,
        "train": dataclasses.asdict(train),
        "options": dict(options),
        "payload": layout,
        "reduce": reduce,
    }
    return header, arrays


class ClientRunner:
    """Runs clients of a federation with one task instance (see the module docstring).

    Args:
        task: the user's task.
        federation: the clients' data (views of shared memory in a worker).
        seed: the run seed.
        threads: torch threads for this worker.
    """

    def __init__(self, task: Task, federation: Federation, seed: int, threads: int) -> None:
        prepare_worker(task, threads)
        self.task = task
        self.federation = federation
        self.seed = seed
        self._round = 0
        self._train = TrainConfig()
        self._options: dict[str, Scalar] = {}
        self._payload: dict[str, Params] = {}
        self._params: Params | None = None
        self._sum: StackedSum | None = None  # checked updates, added in stacks

    @property
    def params(self) -> Params:
        if self._params is None:
            raise BackendError("worker got work before a round's params")
        return self._params

    def set_params(self, params: Params) -> None:
        """Use these global params from now on (e.g. for an evaluation between rounds)."""
        self._params = params

    def begin_round(self, header: Mapping[str, Any], arrays: Sequence[np.ndarray[Any, Any]], params: Params) -> None:
        """Take the settings of a ``round`` message and the round's params."""
        self._round = int(header["round"])
        self._train = TrainConfig(**header["train"])
        self._options = dict(header["options"])
        self._payload = decode_groups(header["payload"], arrays)
        self._params = params
        self._sum = StackedSum(params) if header["reduce"] else None

    def fit(self, client_ids: Sequence[int], states: Mapping[int, TensorGroups]) -> list[bytes]:
        """Train clients in turn; one reply message per client."""
        return [self._fit_one(int(cid), states.get(int(cid))) for cid in client_ids]

    def _fit_one(self, client_id: int, state: TensorGroups | None) -> bytes:
        params = self.params
        try:
            update, new_state = fit_client(
                self.task,
                self.federation.client(client_id),
                params,
                round=self._round,
                train=self._train,
                run_seed=self.seed,
                options=self._options,
                payload=self._payload,
                client_state=state,
            )
        except (ClientFailure, SheafError) as failure:
            reason = failure.reason if isinstance(failure, ClientFailure) else f"fit failed: {failure}"
            return pack({"op": "fit", "client": client_id, "ok": False, "reason": reason})
        state_layout, state_arrays = encode_groups(new_state)
        header: dict[str, Any] = {
            "op": "fit",
            "client": client_id,
            "ok": True,
            "num_examples": update.num_examples,
            "metrics": dict(update.metrics),
            "state": state_layout if new_state is not None else None,
        }
        if self._sum is not None and not update.extras:
            try:
                check_update(update, params)
            except SheafError as exc:  # the same words the round loop uses for a whole update
                return pack({"op": "fit", "client": client_id, "ok": False, "reason": f"update rejected: {exc}"})
            self._sum.add(update)
            return pack({**header, "summed": True}, state_arrays)
        names, deltas = encode_params(update.delta)
        extras_layout, extras = encode_groups(update.extras)
        header.update(summed=False, delta=names, extras=extras_layout)
        return pack(header, [*deltas, *extras, *state_arrays])

    def flush(self) -> bytes:
        """The exact sum of this round's reduced updates (then a fresh, empty one)."""
        if self._sum is None:
            return pack({"op": "sum", "empty": True})
        header, arrays = self._sum.result().to_arrays()
        self._sum = StackedSum(self.params)
        return pack({"op": "sum", "empty": False, **header}, arrays)

    def evaluate(self, client_ids: Sequence[int]) -> list[bytes]:
        """Evaluate the current params on each client's local test split; one reply per client."""
        return [self._evaluate_one(int(cid)) for cid in client_ids]

    def _evaluate_one(self, client_id: int) -> bytes:
        try:
            result = evaluate_client(self.task, self.federation.client(client_id), self.params)
        except (ClientFailure, SheafError) as failure:
            reason = failure.reason if isinstance(failure, ClientFailure) else f"evaluate failed: {failure}"
            return pack({"op": "evaluate", "client": client_id, "ok": False, "reason": reason})
        return pack(
            {
                "op": "evaluate",
                "client": client_id,
                "ok": True,
                "loss": result.loss,
                "num_examples": result.num_examples,
                "metrics": dict(result.metrics),
            }
        )
