"""A partition summary: samples and label histogram per client.

Example:
    >>> from sheaf.core.config import DataConfig
    >>> from sheaf.data.catalog import build_federation
    >>> fed = build_federation(DataConfig(clients=5, partition="shards"), seed=0)
    >>> table = partition_summary(fed)
    >>> list(table.columns[:4]), len(table)
    (['client', 'name', 'train', 'test'], 5)
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from sheaf.data.dataset import Federation

__all__ = ["MAX_DESCRIBED_CLIENTS", "client_data", "partition_summary"]

#: Runs record every client's data summary up to this many clients (beyond, the record would
#: outweigh the run's own figures; ``sheaf partition`` still shows any federation).
MAX_DESCRIBED_CLIENTS = 10_000


def _label_counts(federation: Federation) -> np.ndarray:
    owner = np.repeat(np.arange(federation.num_clients), federation.sizes)
    counts = np.zeros((federation.num_clients, federation.info.num_classes), dtype=np.int64)
    np.add.at(counts, (owner, federation.y.astype(np.int64)), 1)
    return counts


def partition_summary(federation: Federation) -> pd.DataFrame:
    """One row per client: id, name, train and test sizes, labels held, and per-class counts.

    The label columns count the client's train and test rows together, one column per
    class name.
    """
    counts = _label_counts(federation)
    table = pd.DataFrame(
        {
            "client": np.arange(federation.num_clients),
            "name": [federation.client_name(i) for i in range(federation.num_clients)],
            "train": federation.train_counts,
            "test": federation.test_counts,
            "classes": (counts > 0).sum(axis=1),
        }
    )
    labels = pd.DataFrame(counts, columns=[f"y={name}" for name in federation.info.class_names])
    return pd.concat([table, labels], axis=1)


def client_data(federation: Federation) -> dict[str, list[Any]] | None:
    """Every client's data at a glance, JSON-ready, for the run store (None past
    :data:`MAX_DESCRIBED_CLIENTS` clients).

    Returns:
        ``names`` (one per client), ``train`` and ``test`` (rows), ``classes`` (the class
        names) and ``labels`` (per client, its rows per class, train and test together).

    Example:
        >>> from sheaf.core.config import DataConfig
        >>> from sheaf.data.catalog import build_federation
        >>> described = client_data(build_federation(DataConfig(clients=4, partition="iid"), seed=0))
        >>> len(described["labels"]), len(described["labels"][0]), described["classes"][:2]
        (4, 10, ['0', '1'])
    """
    if federation.num_clients > MAX_DESCRIBED_CLIENTS:
        return None
    return {
        "names": [federation.client_name(i) for i in range(federation.num_clients)],
        "train": [int(n) for n in federation.train_counts],
        "test": [int(n) for n in federation.test_counts],
        "classes": [str(c) for c in federation.info.class_names],
        "labels": _label_counts(federation).tolist(),
    }
