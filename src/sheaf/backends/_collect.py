"""The parent side of the pool and Ray backends: turning worker replies into outcomes.

Replies are decoded as data (:mod:`sheaf.backends._wire`) and validated: tensors by the
wire codec, metrics by :func:`~sheaf.core.update.validate_metrics`, exact sums by
:meth:`~sheaf.core.exactsum.ExactSum.from_arrays`. Outcomes are sorted by client id, so
they do not depend on which worker finished first.

Example:
    >>> import numpy as np
    >>> from sheaf.backends._wire import pack
    >>> from sheaf.core.params import Params
    >>> collector = FitCollector(Params({"w": np.zeros(2)}))
    >>> collector.add_reply(pack({"op": "fit", "client": 4, "ok": False, "reason": "fit failed: boom"}))
    4
    >>> [f.reason for f in collector.outcome().failures]
    ['fit failed: boom']
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from sheaf.backends._wire import decode_groups, decode_params, fit_message, unpack
from sheaf.backends.base import ClientReport, Cohort, FitOutcome
from sheaf.core.errors import BackendError, ClientFailure, SheafError
from sheaf.core.exactsum import ExactSum
from sheaf.core.params import Params
from sheaf.core.update import TensorGroups, Update, validate_metrics
from sheaf.task.base import EvalResult

__all__ = ["FitCollector", "RunChunks", "decode_evaluation", "gather_fit"]


def _count(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise BackendError(f"malformed message from a worker: {what} must be a count, got {value!r}")
    return value


class FitCollector:
    """Gathers one cohort's replies: updates, reports, failures, states and exact sums.

    Args:
        params: the round's global params (the shape of every update and sum).
    """

    def __init__(self, params: Params) -> None:
        self.params = params
        self.updates: dict[int, Update] = {}
        self.reports: dict[int, ClientReport] = {}
        self.failures: dict[int, ClientFailure] = {}
        self.states: dict[int, TensorGroups] = {}
        self.summed: ExactSum | None = None

    def add_reply(self, message: bytes) -> int:
        """Record one client's ``fit`` reply; returns the client id.

        Raises:
            BackendError: if the reply is malformed.
        """
        header, arrays = unpack(message)
        try:
            client = _count(header["client"], "client")
            if not header["ok"]:
                self.failures[client] = ClientFailure(client, str(header["reason"]))
                return client
            source = f"client {client} fit metrics"
            metrics = validate_metrics(header["metrics"], source=source)
            num_examples = _count(header["num_examples"], "num_examples")
            state_layout = header["state"]
            if header["summed"]:
                deltas, extras_layout, extra_arrays, state_arrays = [], [], [], arrays
            else:
                names, extras_layout = header["delta"], header["extras"]
                extra_count = sum(len(group_names) for _, group_names in extras_layout)
                deltas = arrays[: len(names)]
                extra_arrays = arrays[len(names) : len(names) + extra_count]
                state_arrays = arrays[len(names) + extra_count :]
            if state_layout is not None:
                self.states[client] = decode_groups(state_layout, state_arrays)
            elif state_arrays:
                raise BackendError("malformed message from a worker: tensors without a state layout")
            if header["summed"]:
                norm = header["norm"]
                if isinstance(norm, bool) or not isinstance(norm, int | float) or not norm >= 0:
                    raise BackendError(f"malformed message from a worker: norm must be a number >= 0, got {norm!r}")
                self.reports[client] = ClientReport(client, num_examples, metrics, float(norm))
            else:
                delta = decode_params(names, deltas)
                extras = decode_groups(extras_layout, extra_arrays)
                self.updates[client] = Update(client, delta, num_examples, metrics, extras)
        except (KeyError, TypeError, ValueError) as exc:
            raise BackendError(f"malformed message from a worker: {exc}") from None
        except SheafError as exc:
            if isinstance(exc, BackendError):
                raise
            raise BackendError(f"malformed message from a worker: {exc}") from None
        return client

    def add_sum(self, message: bytes) -> None:
        """Merge a worker's ``flush`` reply (its exact partial sum).

        Raises:
            BackendError: if the reply is malformed.
        """
        header, arrays = unpack(message)
        if header.get("empty", True):
            return
        try:
            partial = ExactSum.from_arrays(self.params, header, arrays)
        except SheafError as exc:
            raise BackendError(f"malformed partial sum from a worker: {exc}") from None
        if self.summed is None:
            self.summed = partial
        else:
            self.summed.merge(partial)

    def fail(self, client_id: int, reason: str) -> None:
        """Record a client as failed (e.g. its worker died)."""
        self.failures[client_id] = ClientFailure(client_id, reason)

    def forget(self, client_ids: Iterable[int]) -> None:
        """Drop what was recorded for clients that will run again (their sum was lost)."""
        for client in client_ids:
            self.reports.pop(client, None)
            self.states.pop(client, None)
            self.updates.pop(client, None)

    def outcome(self) -> FitOutcome:
        """Everything gathered, sorted by client id."""
        return FitOutcome(
            updates=[self.updates[c] for c in sorted(self.updates)],
            failures=[self.failures[c] for c in sorted(self.failures)],
            client_states={c: self.states[c] for c in sorted(self.states)},
            summed=self.summed,
            reports=[self.reports[c] for c in sorted(self.reports)],
        )


#: How a backend hands clients out: ``(clients, message for a chunk, reply handler, sum
#: handler or None, forget) -> {client: why its worker died}`` (see PoolBackend._run).
RunChunks = Callable[
    [
        list[int],
        Callable[[list[int]], bytes],
        Callable[[bytes], tuple[int, bool]],
        Callable[[bytes], None] | None,
        Callable[[list[int]], None],
    ],
    dict[int, str],
]


def gather_fit(cohort: Cohort, run: RunChunks) -> FitOutcome:
    """Train ``cohort`` through ``run`` (the round's params already published) and collect it.

    Raises:
        BackendError: if a worker's reply is malformed.
    """
    collector = FitCollector(cohort.params)
    states = cohort.client_states

    def reply(data: bytes) -> tuple[int, bool]:
        client = collector.add_reply(data)
        return client, client in collector.reports

    died = run(
        [int(c) for c in cohort.client_ids],
        lambda chunk: fit_message(chunk, states),
        reply,
        collector.add_sum if cohort.reduce else None,
        collector.forget,
    )
    for client, why in died.items():
        collector.fail(client, f"fit failed: {why}")
    return collector.outcome()


def decode_evaluation(message: bytes, results: dict[int, EvalResult], failures: dict[int, ClientFailure]) -> int:
    """Record one client's ``evaluate`` reply; returns the client id.

    Raises:
        BackendError: if the reply is malformed.
    """
    header, _ = unpack(message)
    try:
        client = _count(header["client"], "client")
        if not header["ok"]:
            failures[client] = ClientFailure(client, str(header["reason"]))
            return client
        metrics = validate_metrics(header["metrics"], source=f"client {client} evaluation")
        results[client] = EvalResult(float(header["loss"]), _count(header["num_examples"], "num_examples"), metrics)
    except (KeyError, TypeError, ValueError, SheafError) as exc:
        raise BackendError(f"malformed evaluation reply from a worker: {exc}") from None
    return client
