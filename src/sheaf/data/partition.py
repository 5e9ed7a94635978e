"""Partitioners: how a dataset's rows are dealt out to clients.

Every partitioner returns a :class:`Partition` — row indices grouped by client plus
offsets (CSR layout) — never copies of the data. All randomness comes from the generator
passed in, so a seed gives the same partition every time.

- :func:`partition_iid`: a uniform random split into near-equal parts.
- :func:`partition_dirichlet`: label skew; each class is spread over clients with
  proportions drawn from Dirichlet(alpha) (Hsu et al. 2019, "Measuring the Effects of
  Non-Identical Data Distribution"), with the usual balancing that stops giving a class
  to clients already above the average size.
- :func:`partition_shards`: the pathological split of McMahan et al. 2017
  ("Communication-Efficient Learning of Deep Networks from Decentralized Data"): rows
  sorted by label, cut into ``clients * k`` shards, ``k`` shards per client.
- :func:`partition_quantity`: quantity skew; client sizes log-normal(0, sigma), labels IID.
- :func:`partition_natural`: one client per value of a natural key (e.g. hospital).

Example:
    >>> import numpy as np
    >>> labels = np.repeat(np.arange(4), 25)
    >>> p = partition_shards(labels, num_clients=10, shards_per_client=2, rng=np.random.default_rng(0))
    >>> p.num_clients, int(p.sizes.sum()), max(len(set(labels[p.client_indices(i)])) for i in range(10))
    (10, 100, 2)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from sheaf.core.errors import DataError

__all__ = [
    "PARTITIONERS",
    "Partition",
    "partition_dirichlet",
    "partition_iid",
    "partition_natural",
    "partition_quantity",
    "partition_shards",
]

IntArray = npt.NDArray[np.int64]

#: Names accepted by ``data.partition``.
PARTITIONERS = ("iid", "dirichlet", "shards", "quantity", "natural")

_MAX_DIRICHLET_TRIES = 200


@dataclass(frozen=True)
class Partition:
    """Row indices grouped by client: client ``i`` owns ``indices[offsets[i]:offsets[i+1]]``.

    Attributes:
        indices: row indices into the dataset, grouped by client.
        offsets: ``num_clients + 1`` non-decreasing offsets into ``indices``.
        names: optional readable name per client.
    """

    indices: IntArray
    offsets: IntArray
    names: tuple[str, ...] = ()

    @property
    def num_clients(self) -> int:
        """Number of clients."""
        return len(self.offsets) - 1

    @property
    def sizes(self) -> IntArray:
        """Rows per client."""
        return np.diff(self.offsets)

    def client_indices(self, client_id: int) -> IntArray:
        """The row indices of one client (a view)."""
        return self.indices[self.offsets[client_id] : self.offsets[client_id + 1]]

    @classmethod
    def from_owners(cls, owners: npt.NDArray[Any], num_clients: int, names: tuple[str, ...] = ()) -> Partition:
        """Build a partition from each row's owning client (-1: row unassigned)."""
        assigned = np.flatnonzero(owners >= 0)
        order = assigned[np.argsort(owners[assigned], kind="stable")]
        counts = np.bincount(owners[assigned], minlength=num_clients)
        offsets = np.zeros(num_clients + 1, dtype=np.int64)
        np.cumsum(counts, out=offsets[1:])
        return cls(order.astype(np.int64), offsets, names)


def _check_clients(num_clients: int, num_rows: int, min_samples: int = 1) -> None:
    if num_clients < 1:
        raise DataError(f"the number of clients must be >= 1, got {num_clients}")
    if num_clients * min_samples > num_rows:
        raise DataError(
            f"cannot give {num_clients} clients at least {min_samples} sample(s) each from "
            f"{num_rows} samples; use at most {num_rows // min_samples} clients or lower data.min_samples"
        )


def partition_iid(num_rows: int, num_clients: int, rng: np.random.Generator) -> Partition:
    """Split ``num_rows`` rows uniformly at random into ``num_clients`` near-equal parts.

    Raises:
        DataError: if there are more clients than rows.
    """
    _check_clients(num_clients, num_rows)
    order = rng.permutation(num_rows).astype(np.int64)
    offsets = np.linspace(0, num_rows, num_clients + 1).round().astype(np.int64)
    return Partition(order, offsets)


def partition_dirichlet(
    labels: npt.NDArray[Any],
    num_clients: int,
    alpha: float,
    rng: np.random.Generator,
    min_samples: int = 2,
) -> Partition:
    """Label-skewed split: class proportions per client drawn from Dirichlet(alpha).

    Draws are repeated until every client holds at least ``min_samples`` rows.

    Args:
        labels: integer class per row.
        num_clients: number of clients.
        alpha: concentration (> 0); small values give clients few classes.
        rng: the random generator.
        min_samples: the fewest rows a client may hold.

    Raises:
        DataError: on alpha <= 0, too many clients, or when no draw satisfies
            ``min_samples`` after many tries.

    References:
        Hsu, Qi, Brown. Measuring the Effects of Non-Identical Data Distribution for
        Federated Visual Classification. 2019.
    """
    if not alpha > 0:
        raise DataError(f"alpha must be > 0 for Dirichlet partitioning, got {alpha}")
    n = len(labels)
    _check_clients(num_clients, n, min_samples)
    classes = np.unique(labels)
    by_class = [np.flatnonzero(labels == k) for k in classes]
    for _ in range(_MAX_DIRICHLET_TRIES):
        owners = np.empty(n, dtype=np.int64)
        sizes = np.zeros(num_clients, dtype=np.int64)
        for rows in by_class:
            rows = rng.permutation(rows)
            proportions = rng.dirichlet(np.full(num_clients, alpha))
            # Balancing (as in the common reference implementation): clients already above
            # the average size receive no more of this class.
            proportions = proportions * (sizes < n / num_clients)
            total = proportions.sum()
            proportions = proportions / total if total > 0 else np.full(num_clients, 1 / num_clients)
            cuts = (np.cumsum(proportions) * len(rows)).astype(np.int64)[:-1]
            counts = np.diff(np.concatenate(([0], cuts, [len(rows)])))
            owners[rows] = np.repeat(np.arange(num_clients), counts)
            sizes += counts
        if sizes.min() >= min_samples:
            return Partition.from_owners(owners, num_clients)
    raise DataError(
        f"no Dirichlet(alpha={alpha}) draw gave all {num_clients} clients >= {min_samples} samples "
        f"in {_MAX_DIRICHLET_TRIES} tries; raise alpha, use fewer clients or lower data.min_samples"
    )


def partition_shards(
    labels: npt.NDArray[Any], num_clients: int, shards_per_client: int, rng: np.random.Generator
) -> Partition:
    """Pathological non-IID split: ``shards_per_client`` label-sorted shards per client.

    Rows are sorted by label and cut into ``num_clients * shards_per_client`` equal shards
    (the remainder rows are dropped, as in the paper); each client gets random shards.

    Raises:
        DataError: if there are fewer rows than shards.

    References:
        McMahan et al. Communication-Efficient Learning of Deep Networks from
        Decentralized Data. AISTATS 2017.
    """
    if shards_per_client < 1:
        raise DataError(f"shards_per_client must be >= 1, got {shards_per_client}")
    num_shards = num_clients * shards_per_client
    _check_clients(num_shards, len(labels))
    by_label = np.argsort(labels, kind="stable").astype(np.int64)
    shard_size = len(labels) // num_shards
    shard_of_client = rng.permutation(num_shards).reshape(num_clients, shards_per_client)
    starts = shard_of_client * shard_size
    idx = (starts[:, :, None] + np.arange(shard_size)[None, None, :]).reshape(num_clients, -1)
    indices = by_label[idx.ravel()]
    offsets = np.arange(num_clients + 1, dtype=np.int64) * shards_per_client * shard_size
    return Partition(indices, offsets)


def partition_quantity(
    num_rows: int, num_clients: int, sigma: float, rng: np.random.Generator, min_samples: int = 2
) -> Partition:
    """Quantity skew: client sizes proportional to log-normal(0, sigma) draws, IID labels.

    Every client gets at least ``min_samples`` rows; the rest are dealt in proportion to
    the draws (largest remainders first), so sizes sum to ``num_rows``.

    Raises:
        DataError: if ``num_clients * min_samples`` exceeds the rows, or sigma < 0.
    """
    if sigma < 0:
        raise DataError(f"sigma must be >= 0 for quantity skew, got {sigma}")
    _check_clients(num_clients, num_rows, min_samples)
    weights = rng.lognormal(0.0, sigma, size=num_clients)
    spare = num_rows - num_clients * min_samples
    share = weights / weights.sum() * spare
    counts = np.floor(share).astype(np.int64)
    leftover = spare - int(counts.sum())
    counts[np.argsort(counts - share, kind="stable")[:leftover]] += 1
    counts += min_samples
    offsets = np.zeros(num_clients + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    return Partition(rng.permutation(num_rows).astype(np.int64), offsets)


def partition_natural(groups: npt.NDArray[Any], order: Sequence[str] = ()) -> Partition:
    """One client per distinct value of a natural key, e.g. the hospital of each patient.

    Args:
        groups: the key of each row.
        order: the client order by key value; default sorted values.

    Raises:
        DataError: if ``order`` misses a value present in ``groups``.
    """
    # Factorise first: a million rows hold few distinct keys, so only those become strings.
    codes, uniques = pd.factorize(np.asarray(groups, dtype=object))
    keys = [str(u) for u in uniques]
    values = [str(v) for v in (order or sorted(set(keys)))]
    position = {v: i for i, v in enumerate(values)}
    missing = sorted(set(keys) - set(values))
    if missing:
        raise DataError(f"natural partition has no client for key values {missing}")
    owners = np.array([position[k] for k in keys], dtype=np.int64)[codes]
    return Partition.from_owners(owners, len(values), tuple(values))
