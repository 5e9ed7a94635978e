"""The worker side of the pool and Ray backends: one task, many clients, replies as messages.

A :class:`WorkerRunner` lives in a long-lived worker (a pool process or a Ray actor). It
holds the user's task — one model, reused for every client — the federation's data and
the client steps the run may ask for (given once, at start), and answers messages (see
:mod:`sheaf.backends._wire`):

- ``round``: the round's settings, payload, the names of its client steps and its
  acceptance rule (the params come separately, from shared memory or the object store); a
  cohort that may be reduced starts an exact sum;
- ``fit``: train some clients with the shared :class:`~sheaf.backends.client_runner.ClientRunner`,
  exactly as the inline backend does; one reply per client. In a reduced round an update
  the rule accepts is added to the worker's exact sum and only its metrics travel;
- ``flush``: send the exact sum (and start a new one);
- ``evaluate``: evaluate some clients; one reply per client;
- ``central``: evaluate some shards of the central test set; one reply per shard.

Example:
    >>> import numpy as np
    >>> from sheaf.core.config import TrainConfig
    >>> from sheaf.core.params import Params
    >>> from sheaf.backends._wire import unpack
    >>> from sheaf.backends.base import RoundWork
    >>> from sheaf.core.acceptance import UpdateRule
    >>> from sheaf.data.dataset import DatasetInfo, Federation, Split
    >>> class Mean:
    ...     def init_params(self, seed): return Params({"w": np.zeros(1)})
    ...     def fit(self, params, data, instructions):
    ...         from sheaf.task.base import FitResult
    ...         return FitResult(Params({"w": data.x.mean(axis=0)}), len(data))
    ...     def evaluate(self, params, data): ...
    >>> fed = Federation(DatasetInfo("toy", (1,), 2, ("a", "b")), np.arange(4.0).reshape(4, 1),
    ...                  np.zeros(4, np.int64), np.array([0, 2, 4]), np.array([2, 2]), Split(np.zeros((0, 1)), np.zeros(0)))
    >>> runner = WorkerRunner(Mean(), fed, seed=0, threads=1)
    >>> work = RoundWork(1, Params({"w": np.zeros(1)}), TrainConfig(), rule=UpdateRule())
    >>> runner.begin_round(round_header(work)[0], [], work.params)
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
from sheaf.backends.base import RoundWork
from sheaf.backends.client_runner import ClientRunner
from sheaf.core.acceptance import UpdateRule
from sheaf.core.config import TrainConfig
from sheaf.core.errors import BackendError, ClientFailure, SheafError
from sheaf.core.exactsum import StackedSum
from sheaf.core.params import Params
from sheaf.core.update import TensorGroups, validate_metrics
from sheaf.data.dataset import Federation
from sheaf.evaluation.central import evaluate_shards
from sheaf.task.base import Task, prepare_worker
from sheaf.task.client_steps import ClientStep, resolve_steps, step_names, steps_by_name

__all__ = ["WorkerRunner", "round_header"]


def round_header(work: RoundWork) -> tuple[dict[str, Any], list[np.ndarray[Any, Any]]]:
    """The ``round`` message's header and tensors (the params travel separately).

    Client steps travel by name; the worker resolves them against the steps it was given
    at start.
    """
    layout, arrays = encode_groups(work.payload)
    header = {
        "op": "round",
        "round": work.round,
        "train": dataclasses.asdict(work.train),
        "options": dict(work.options),
        "payload": layout,
        "steps": list(step_names(work.steps)),
        "rule": None if work.rule is None else work.rule.to_json(),
    }
    return header, arrays


class WorkerRunner:
    """Runs clients of a federation with one task instance (see the module docstring).

    Args:
        task: the user's task.
        federation: the clients' data (views of shared memory in a worker).
        seed: the run seed.
        threads: torch threads for this worker.
        client_steps: the client steps rounds may name.
        device: where this worker computes (``cpu``, ``cuda:N``).
    """

    def __init__(
        self,
        task: Task,
        federation: Federation,
        seed: int,
        threads: int,
        client_steps: Sequence[ClientStep] = (),
        device: str = "cpu",
    ) -> None:
        prepare_worker(task, threads, device)
        self.federation = federation
        self._runner = ClientRunner(task, seed)
        self._known = steps_by_name(client_steps)
        self._work: RoundWork | None = None
        self._sum: StackedSum | None = None  # accepted updates, added in stacks

    @property
    def params(self) -> Params:
        if self._work is None:
            raise BackendError("worker got work before a round's params")
        return self._work.params

    def set_params(self, params: Params) -> None:
        """Use these global params from now on (e.g. for an evaluation between rounds)."""
        self._work = RoundWork(0, params, TrainConfig()) if self._work is None else self._work
        self._work = dataclasses.replace(self._work, params=params)

    def begin_round(self, header: Mapping[str, Any], arrays: Sequence[np.ndarray[Any, Any]], params: Params) -> None:
        """Take the settings of a ``round`` message and the round's params.

        Raises:
            BackendError: if the round names a client step this worker was not given.
        """
        try:
            steps = resolve_steps([str(name) for name in header["steps"]], self._known)
        except SheafError as exc:
            raise BackendError(f"a round asks for client steps the backend was not started with: {exc}") from None
        rule = header["rule"]
        self._work = RoundWork(
            int(header["round"]),
            params,
            TrainConfig(**header["train"]),
            dict(header["options"]),
            decode_groups(header["payload"], arrays),
            steps,
            None if rule is None else UpdateRule.from_json(rule),
        )
        self._sum = StackedSum(params) if rule is not None else None

    def fit(self, client_ids: Sequence[int], states: Mapping[int, TensorGroups]) -> list[bytes]:
        """Train clients in turn; one reply message per client."""
        return [self._fit_one(int(cid), states.get(int(cid))) for cid in client_ids]

    def _fit_one(self, client_id: int, state: TensorGroups | None) -> bytes:
        if self._work is None:
            raise BackendError("worker got work before a round's params")
        reply = self._runner.fit(self.federation.client(client_id), self._work, state)
        if reply.update is None:
            failure = reply.failure or ClientFailure(client_id, "fit failed")
            return pack({"op": "fit", "client": client_id, "ok": False, "reason": failure.reason})
        update, new_state = reply.update, reply.state
        state_layout, state_arrays = encode_groups(new_state)
        header: dict[str, Any] = {
            "op": "fit",
            "client": client_id,
            "ok": True,
            "num_examples": update.num_examples,
            "metrics": dict(update.metrics),
            "state": state_layout if new_state is not None else None,
        }
        if self._sum is not None and not update.extras and update.encoded is None:
            self._sum.add(update)  # the runner applied the round's acceptance rule
            return pack({**header, "summed": True, "norm": reply.norm}, state_arrays)
        names, deltas = encode_params(update.delta)
        extras_layout, extras = encode_groups(update.extras)
        coded = list(update.encoded.values()) if update.encoded is not None else []
        header.update(
            summed=False,
            delta=names,
            extras=extras_layout,
            encoded=list(update.encoded) if update.encoded is not None else None,
        )
        return pack(header, [*deltas, *extras, *coded, *state_arrays])

    def flush(self) -> bytes:
        """The exact sum of this round's reduced updates (then a fresh, empty one)."""
        if self._sum is None:
            return pack({"op": "sum", "empty": True})
        header, arrays = self._sum.result().to_arrays()
        self._sum = StackedSum(self.params)
        return pack({"op": "sum", "empty": False, **header}, arrays)

    def evaluate_central(self, shards: Sequence[Sequence[int]]) -> list[bytes]:
        """Evaluate the current params on shards ``[index, start, stop]`` of the central test set; one reply each.

        The reply carries the shard's index where a client's carries its id, so the
        parent's evaluation collector reads both.
        """
        replies = []
        test = self.federation.central_test
        for index, start, stop in shards:
            try:
                (result,) = evaluate_shards(self._runner.task, self.params, test, [range(int(start), int(stop))])
                validate_metrics(result.metrics, source="central evaluation")  # what the parent would refuse
            except Exception as exc:  # the parent evaluates this shard itself (and raises there, if it raises)
                replies.append(pack({"op": "evaluate", "client": int(index), "ok": False, "reason": repr(exc)}))
                continue
            replies.append(
                pack(
                    {
                        "op": "evaluate",
                        "client": int(index),
                        "ok": True,
                        "loss": result.loss,
                        "num_examples": result.num_examples,
                        "metrics": dict(result.metrics),
                    }
                )
            )
        return replies

    def evaluate(self, client_ids: Sequence[int]) -> list[bytes]:
        """Evaluate the current params on each client's local test split; one reply per client."""
        return [self._evaluate_one(int(cid)) for cid in client_ids]

    def _evaluate_one(self, client_id: int) -> bytes:
        outcome = self._runner.evaluate(self.federation.client(client_id), self.params)
        if isinstance(outcome, ClientFailure):
            return pack({"op": "evaluate", "client": client_id, "ok": False, "reason": outcome.reason})
        return pack(
            {
                "op": "evaluate",
                "client": client_id,
                "ok": True,
                "loss": outcome.loss,
                "num_examples": outcome.num_examples,
                "metrics": dict(outcome.metrics),
            }
        )
