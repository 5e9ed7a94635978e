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

import numpy as np
import pandas as pd

from sheaf.data.dataset import Federation

__all__ = ["partition_summary"]


def partition_summary(federation: Federation) -> pd.DataFrame:
    """One row per client: id, name, train and test sizes, labels held, and per-class counts.

    The label columns count the client's train and test rows together, one column per
    class name.
    """
    n_classes = federation.info.num_classes
    owner = np.repeat(np.arange(federation.num_clients), federation.sizes)
    counts = np.zeros((federation.num_clients, n_classes), dtype=np.int64)
    np.add.at(counts, (owner, federation.y.astype(np.int64)), 1)
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
