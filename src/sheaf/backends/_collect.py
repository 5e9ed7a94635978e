"""The parent side of the pool and Ray backends: worker replies as outcomes, through the scheduler.

Replies are decoded as data (:mod:`sheaf.backends._wire`) and validated: tensors by the
wire codec, metrics by :func:`~sheaf.core.update.validate_metrics`, exact sums by
:meth:`~sheaf.core.exactsum.ExactSum.from_arrays` (and their weight and count against the
clients they claim to hold). A reply must be for the client the scheduler expects next, and
nothing is recorded from one that is refused. Outcomes are sorted by client id, so they do
not depend on which worker finished first. :func:`fit_cohort` and :func:`evaluate_clients`
run a cohort through :func:`~sheaf.backends._scheduler.schedule` with these collectors, and
:func:`evaluate_central_shards` the shards of a central evaluation (as if they were clients).

Example:
    >>> import numpy as np
    >>> from sheaf.backends._wire import pack
    >>> from sheaf.core.params import Params
    >>> collector = FitCollector(Params({"w": np.zeros(2)}))
    >>> collector.add_reply(pack({"op": "fit", "client": 4, "ok": False, "reason": "fit failed: boom"}), 4)
    False
    >>> [f.reason for f in collector.outcome().failures]
    ['fit failed: boom']
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy.typing as npt

from sheaf.backends._scheduler import Transport, Work, schedule
from sheaf.backends._wire import decode_groups, decode_params, fit_message, pack, unpack
from sheaf.backends.base import ClientReport, Cohort, EvalOutcome, FitOutcome
from sheaf.core.encoded import Encoded
from sheaf.core.errors import BackendError, ClientFailure, SheafError
from sheaf.core.exactsum import ExactSum
from sheaf.core.params import Params
from sheaf.core.update import TensorGroups, Update, validate_metrics
from sheaf.task.base import EvalResult

__all__ = [
    "EvalCollector",
    "FitCollector",
    "evaluate_central_shards",
    "evaluate_clients",
    "fit_cohort",
    "largest_first",
]

_FLUSH = pack({"op": "flush"})


def _count(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise BackendError(f"malformed message from a worker: {what} must be a count, got {value!r}")
    return value


def _for(header: dict[str, Any], client: int) -> int:
    got = _count(header["client"], "client")
    if got != client:
        raise BackendError(f"malformed message from a worker: a reply for client {got} where {client} was due")
    return got


class FitCollector:
    """Gathers one cohort's replies: updates, reports, failures, states and exact sums.

    Args:
        params: the round's global params (the shape of every update and sum).
        reduce: whether workers may add updates into partial sums (the cohort's ``reduce``).
    """

    def __init__(self, params: Params, reduce: bool = False) -> None:
        self.params = params
        self.reduce = reduce
        self.updates: dict[int, Update] = {}
        self.reports: dict[int, ClientReport] = {}
        self.failures: dict[int, ClientFailure] = {}
        self.states: dict[int, TensorGroups] = {}
        self.summed: ExactSum | None = None

    def add_reply(self, message: bytes, client: int) -> bool:
        """Record ``client``'s ``fit`` reply; returns whether its update went into the worker's sum.

        Raises:
            BackendError: if the reply is malformed or not ``client``'s (nothing is recorded).
        """
        header, arrays = unpack(message)
        try:
            _for(header, client)
            if not header["ok"]:
                self.failures[client] = ClientFailure(client, str(header["reason"]))
                return False
            metrics = validate_metrics(header["metrics"], source=f"client {client} fit metrics")
            num_examples = _count(header["num_examples"], "num_examples")
            state_layout, summed = header["state"], header["summed"]
            if not isinstance(summed, bool) or (summed and not self.reduce):
                raise BackendError(f"malformed message from a worker: summed={summed!r} where reduce={self.reduce}")
            encoded: Encoded | None = None
            if summed:
                deltas, extras_layout, extra_arrays, state_arrays = [], [], [], arrays
            else:
                names, extras_layout, coded = header["delta"], header["extras"], header.get("encoded")
                extra_count = sum(len(group_names) for _, group_names in extras_layout)
                coded_count = 0 if coded is None else len(coded)
                deltas = arrays[: len(names)]
                extra_arrays = arrays[len(names) : len(names) + extra_count]
                end = len(names) + extra_count + coded_count
                if coded is not None:  # the update as its encoder sent it: the server half decodes it
                    encoded = Encoded(dict(zip((str(n) for n in coded), arrays[end - coded_count : end], strict=True)))
                state_arrays = arrays[end:]
            if state_layout is None and state_arrays:
                raise BackendError("malformed message from a worker: tensors without a state layout")
            state = None if state_layout is None else decode_groups(state_layout, state_arrays)
            extras = decode_groups(extras_layout, extra_arrays)
            update = (
                None if summed else Update(client, decode_params(names, deltas), num_examples, metrics, extras, encoded)
            )
            norm = math.nan
            if summed:
                norm = header["norm"]
                if isinstance(norm, bool) or not isinstance(norm, int | float) or not norm >= 0:
                    raise BackendError(f"malformed message from a worker: norm must be a number >= 0, got {norm!r}")
        except (KeyError, TypeError, ValueError) as exc:
            raise BackendError(f"malformed message from a worker: {exc}") from None
        except SheafError as exc:
            if isinstance(exc, BackendError):
                raise
            raise BackendError(f"malformed message from a worker: {exc}") from None
        if state is not None:
            self.states[client] = state
        if update is None:
            self.reports[client] = ClientReport(client, num_examples, metrics, float(norm))
        else:
            self.updates[client] = update
        return update is None

    def add_sum(self, message: bytes, clients: Sequence[int]) -> None:
        """Merge a worker's ``flush`` reply: the exact sum of the updates of ``clients``.

        Raises:
            BackendError: if the reply is malformed, or its weight or count is not that of
                ``clients``' updates (nothing is merged).
        """
        header, arrays = unpack(message)
        weights = [self.reports[c].num_examples for c in clients if c in self.reports]
        expected = (sum(weights), sum(1 for w in weights if w > 0))
        if header.get("empty", True):
            partial = None
            got = (0, 0)
        else:
            try:
                partial = ExactSum.from_arrays(self.params, header, arrays)
            except SheafError as exc:
                raise BackendError(f"malformed partial sum from a worker: {exc}") from None
            got = (partial.weight, partial.count)
        if len(weights) != len(clients) or got != expected:
            raise BackendError(
                f"malformed partial sum from a worker: weight and count {got} where its clients give {expected}"
            )
        if partial is None:
            return
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


class EvalCollector:
    """Gathers evaluation replies: results and failures (nothing is summed)."""

    def __init__(self) -> None:
        self.results: dict[int, EvalResult] = {}
        self.failures: dict[int, ClientFailure] = {}

    def add_reply(self, message: bytes, client: int) -> bool:
        """Record ``client``'s ``evaluate`` reply; returns False (never summed).

        Raises:
            BackendError: if the reply is malformed or not ``client``'s (nothing is recorded).
        """
        header, _ = unpack(message)
        try:
            _for(header, client)
            if not header["ok"]:
                self.failures[client] = ClientFailure(client, str(header["reason"]))
                return False
            metrics = validate_metrics(header["metrics"], source=f"client {client} evaluation")
            result = EvalResult(float(header["loss"]), _count(header["num_examples"], "num_examples"), metrics)
        except (KeyError, TypeError, ValueError, SheafError) as exc:
            raise BackendError(f"malformed evaluation reply from a worker: {exc}") from None
        self.results[client] = result
        return False

    def add_sum(self, message: bytes, clients: Sequence[int]) -> None:
        """Evaluation sums nothing.

        Raises:
            BackendError: always.
        """
        raise BackendError("malformed message from a worker: a partial sum in an evaluation")

    def forget(self, client_ids: Iterable[int]) -> None:
        """Drop the results of clients that run again."""
        for client in client_ids:
            self.results.pop(client, None)

    def outcome(self) -> EvalOutcome:
        """Everything gathered, sorted by client id."""
        return EvalOutcome(
            {c: self.results[c] for c in sorted(self.results)}, [self.failures[c] for c in sorted(self.failures)]
        )


def largest_first(client_ids: Sequence[int], rows: Sequence[int] | npt.NDArray[Any] | None) -> list[int]:
    """The clients in the order they are handed out: most training rows first, ties by id.

    A round ends when its slowest worker does; starting the longest clients first leaves
    the short ones to even out the workers' ends (longest processing time first). The
    order never changes a result: outcomes are sorted by client id and sums are exact.

    Example:
        >>> largest_first([1, 2, 3, 4], [0, 50, 10, 50, 10])
        [1, 3, 2, 4]
    """
    ids = [int(c) for c in client_ids]
    if rows is None:
        return ids
    return sorted(ids, key=lambda c: (-int(rows[c]), c))


def fit_cohort(
    transport: Transport,
    cohort: Cohort,
    *,
    timeout: float | None,
    rows: Sequence[int] | npt.NDArray[Any] | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> FitOutcome:
    """Train ``cohort`` on ``transport``'s workers (the round's params already published).

    Args:
        transport: the workers.
        cohort: the round's work.
        timeout: seconds one client may train (None: no limit).
        rows: each client's training rows, by client id: clients with more go out first
            (:func:`largest_first`); None keeps the cohort's order.
        clock: the time ``timeout`` is measured in (a controllable one in tests).

    Raises:
        BackendError: if no worker is left to run clients.
    """
    collector = FitCollector(cohort.params, reduce=cohort.reduce)
    states = cohort.client_states
    work = Work(lambda chunk: fit_message(chunk, states), _FLUSH if cohort.reduce else None)
    clients = largest_first(cohort.client_ids, rows)
    for client, why in schedule(transport, clients, collector, work, timeout=timeout, clock=clock).items():
        collector.fail(client, f"fit failed: {why}")
    return collector.outcome()


def evaluate_clients(
    transport: Transport,
    client_ids: Sequence[int],
    *,
    timeout: float | None,
    clock: Callable[[], float] = time.monotonic,
) -> EvalOutcome:
    """Evaluate the clients on ``transport``'s workers (the params already published); ``clock``
    as for :func:`fit_cohort`.

    Raises:
        BackendError: if no worker is left to run clients.
    """
    collector = EvalCollector()
    work = Work(lambda chunk: pack({"op": "evaluate", "clients": list(chunk)}))
    clients = [int(c) for c in client_ids]
    for client, why in schedule(transport, clients, collector, work, timeout=timeout, clock=clock).items():
        collector.failures[client] = ClientFailure(client, f"evaluate failed: {why}")
    return collector.outcome()


def evaluate_central_shards(
    transport: Transport,
    shards: Sequence[range],
    here: Callable[[Sequence[range]], list[EvalResult]],
    *,
    timeout: float | None,
    clock: Callable[[], float] = time.monotonic,
) -> list[EvalResult]:
    """Evaluate shards of the central test set on ``transport``'s workers (the params already
    published); ``clock`` as for :func:`fit_cohort`.

    A single shard, and any shard whose worker failed or was lost, is evaluated ``here``
    (in the parent), where an error of the task is raised as it would be without workers;
    a shard's result is the same bits wherever it runs (:mod:`sheaf.evaluation.central`).

    Returns:
        Each shard's result, in shard order.

    Raises:
        BackendError: if no worker is left to run work.
    """
    if len(shards) <= 1:
        return here(shards)
    collector = EvalCollector()

    def message(chunk: Sequence[int]) -> bytes:
        return pack({"op": "central", "shards": [[i, shards[i].start, shards[i].stop] for i in chunk]})

    schedule(transport, list(range(len(shards))), collector, Work(message), timeout=timeout, clock=clock)
    missing = [i for i in range(len(shards)) if i not in collector.results]
    again = dict(zip(missing, here([shards[i] for i in missing]), strict=True))
    return [collector.results[i] if i in collector.results else again[i] for i in range(len(shards))]
