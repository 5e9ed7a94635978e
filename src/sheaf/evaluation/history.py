"""What a run records each round, and the run's history as a whole.

Example:
    >>> r = RoundRecord(round=1, sampled=10, completed=10, central={"accuracy": 0.9, "loss": 0.3})
    >>> h = History([r])
    >>> h.final_central["accuracy"], h.rounds_completed
    (0.9, 1)
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["ClientRecord", "History", "RoundRecord"]


@dataclass(frozen=True)
class ClientRecord:
    """One client's metrics in one phase of one round.

    Attributes:
        client_id: the client.
        phase: ``fit`` (shared training metrics) or ``evaluate`` (local test split).
        num_examples: examples trained on or evaluated.
        metrics: the numbers (for evaluate: ``loss`` and the task's metrics).
    """

    client_id: int
    phase: str
    num_examples: int
    metrics: Mapping[str, float]


@dataclass(frozen=True)
class RoundRecord:
    """The outcome of one round.

    Attributes:
        round: the round number (1-based).
        sampled: clients asked to train.
        completed: clients whose update was aggregated.
        failed: clients that dropped out or whose update was rejected.
        aggregated: False if too few updates arrived and the model was left unchanged.
        central: the global model on the central test set (``loss``, ``accuracy``, ...).
        fit: aggregate training figures (mean client train loss, update norm).
        federated: per metric, its fairness summary over clients' local test splits, on
            rounds with federated evaluation; empty otherwise.
        seconds: wall time of the round (not part of equality: see :meth:`results`).
        note: why the model was left unchanged, when it was (too few updates, or the
            updates broke the strategy's assumption); empty otherwise.
        privacy: with differential privacy, what the run has spent after this round:
            ``epsilon`` at ``delta``, the ``rounds`` released, the ``clip`` norm of the next
            round and the ``noise_multiplier``; empty otherwise.
        monitor: the global model on a fixed subset of the central test set, every round,
            when the run watches progress on one (``evaluation.monitor``); ``central`` then
            holds the whole test set's figures after the last round only. Empty otherwise.
        virtual_seconds: with simulated devices (``[devices]``), the virtual time at which
            the round ended, in seconds since the run began (0 without them). Unlike
            ``seconds`` it is part of the run's results: the same seed gives the same.
        traffic: the bytes of the round's training: ``download_bytes`` (what the cohort was
            sent) and ``upload_bytes`` (what came back), exact tensor bytes in a simulation,
            wire bytes in a deployment (``run.traffic``); empty in runs recorded before
            traffic was counted. Like ``seconds``, a measurement of the transport, not
            part of equality (a deployed round equals its simulation but for the framing).
    """

    round: int
    sampled: int
    completed: int
    failed: int = 0
    aggregated: bool = True
    central: Mapping[str, float] = field(default_factory=dict)
    fit: Mapping[str, float] = field(default_factory=dict)
    federated: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    seconds: float = field(default=0.0, compare=False)
    note: str = ""
    privacy: Mapping[str, float] = field(default_factory=dict)
    monitor: Mapping[str, float] = field(default_factory=dict)
    virtual_seconds: float = 0.0
    traffic: Mapping[str, float] = field(default_factory=dict, compare=False)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> RoundRecord:
        """Rebuild from :meth:`to_dict` output."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in raw.items() if k in names})


class History(Sequence[RoundRecord]):
    """The rounds of a run, in order."""

    def __init__(self, records: Sequence[RoundRecord] = ()) -> None:
        self._records = list(records)

    def __getitem__(self, index: int) -> RoundRecord:  # type: ignore[override]
        return self._records[index]

    def __len__(self) -> int:
        return len(self._records)

    def __iter__(self) -> Iterator[RoundRecord]:
        return iter(self._records)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, History) and self._records == other._records

    def __hash__(self) -> int:
        return hash(tuple(r.round for r in self._records))

    def append(self, record: RoundRecord) -> None:
        """Add the next round's record."""
        self._records.append(record)

    @property
    def rounds_completed(self) -> int:
        """The last recorded round number (0 if none)."""
        return self._records[-1].round if self._records else 0

    @property
    def final_central(self) -> Mapping[str, float]:
        """Central metrics after the last round."""
        return self._records[-1].central if self._records else {}

    @property
    def final_federated(self) -> Mapping[str, Mapping[str, float]]:
        """The last federated evaluation's summaries (empty if there was none)."""
        for record in reversed(self._records):
            if record.federated:
                return record.federated
        return {}

    @property
    def final_privacy(self) -> Mapping[str, float]:
        """What the run had spent on privacy after its last round (empty without DP)."""
        return self._records[-1].privacy if self._records else {}

    def series(self, section: str, metric: str) -> list[tuple[int, float]]:
        """``(round, value)`` pairs of a metric, e.g. ``series("central", "accuracy")``."""
        out = []
        for record in self._records:
            value = getattr(record, section).get(metric)
            if isinstance(value, int | float) and not math.isnan(value):
                out.append((record.round, float(value)))
        return out
