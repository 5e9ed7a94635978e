"""The one exception root of sheaf, and its hierarchy.

Every error sheaf raises on purpose derives from :class:`SheafError`; errors from
dependencies are translated into one of these at the boundary where they occur::

    SheafError
    ├── ConfigError          a setting is unknown, mistyped or out of range
    ├── DataError            a dataset, partition or client's data is unusable
    │   └── SchemaError      a client's rows do not match the declared schema
    ├── TaskError            the user's task cannot be loaded or misbehaves
    ├── StrategyError        an aggregation step got a bad hyperparameter or input
    │   └── AggregationError a round's updates break a step's assumption (round skipped)
    ├── BackendError         a backend cannot start or lost its workers
    ├── ClientFailure        one client's work failed (a dropout for the round loop)
    ├── StoreError           the run store is missing, foreign or inconsistent
    └── SecAggError          a secure-aggregation message is malformed, forged or out of turn

Messages say what was wrong and what to do, in one line, e.g.
``"alpha must be > 0 for Dirichlet partitioning, got -1"``.
"""

from __future__ import annotations

__all__ = [
    "AggregationError",
    "BackendError",
    "ClientFailure",
    "ConfigError",
    "DataError",
    "SchemaError",
    "SecAggError",
    "SheafError",
    "StoreError",
    "StrategyError",
    "TaskError",
]


class SheafError(Exception):
    """Root of every error sheaf raises on purpose."""


class ConfigError(SheafError):
    """A configuration key is unknown, or its value has the wrong type or range."""


class DataError(SheafError):
    """A dataset, partition or client's data cannot be used as asked."""


class SchemaError(DataError):
    """A client's rows break the declared schema (missing column, wrong type, unseen
    category, too many missing values)."""


class TaskError(SheafError):
    """The user's task cannot be loaded, or it returned something unusable."""


class StrategyError(SheafError):
    """An aggregation step was given a bad hyperparameter or unusable updates."""


class AggregationError(StrategyError):
    """A round's updates do not meet an aggregation step's assumption.

    For example Krum with ``f`` attackers needs at least ``2f + 3`` updates, and FedNova
    needs each client's step count. The round loop records the round as not aggregated,
    with this message, and the run carries on.
    """


class BackendError(SheafError):
    """A backend could not run a cohort at all (as opposed to one client failing)."""


class ClientFailure(SheafError):
    """One client's work failed; the round loop treats it as a dropout.

    Args:
        client_id: the client whose work failed.
        reason: one line saying what went wrong.
    """

    def __init__(self, client_id: int, reason: str) -> None:
        super().__init__(f"client {client_id}: {reason}")
        self.client_id = client_id
        self.reason = reason


class StoreError(SheafError):
    """The run store is missing, belongs to another run, or is inconsistent."""


class SecAggError(SheafError):
    """A secure-aggregation message is malformed, fails authentication, or comes out of turn.

    The party that receives it refuses it (a client aborts its part of the protocol; the
    server drops the sender), and says which message and why.
    """
