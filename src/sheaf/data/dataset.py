"""A federation's data: every client's rows in one array, addressed by offsets.

:class:`Federation` holds the clients' (already preprocessed) samples *client by client*
in one ``x`` and one ``y`` array; client ``i`` owns rows ``offsets[i]:offsets[i+1]``, of
which the first ``train_counts[i]`` are its training split and the rest its local test
split. A client's data is therefore a pair of views — no copy — and a federation of
100,000 clients costs two small integer arrays beyond the samples themselves.

Example:
    >>> import numpy as np
    >>> fed = Federation(
    ...     info=DatasetInfo("toy", (1,), 2, ("a", "b")),
    ...     x=np.arange(6, dtype=np.float32).reshape(6, 1), y=np.array([0, 1, 0, 1, 0, 1]),
    ...     offsets=np.array([0, 4, 6]), train_counts=np.array([3, 1]),
    ...     central_test=Split(np.zeros((1, 1), np.float32), np.zeros(1, np.int64)))
    >>> c = fed.client(0)
    >>> len(c.train), len(c.test), fed.num_clients
    (3, 1, 2)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from sheaf.core.errors import DataError

__all__ = ["ClientData", "DatasetInfo", "Federation", "Split"]

IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True)
class DatasetInfo:
    """What a model needs to know about a dataset.

    Attributes:
        name: dataset name.
        input_shape: shape of one sample's features (after preprocessing).
        num_classes: number of target classes.
        class_names: a readable name per class.
        feature_names: a name per feature column, when the data is tabular.
        input_dtype: the features' numpy dtype name (e.g. ``float32``, or ``uint8`` for
            character indices); empty if unknown.
    """

    name: str
    input_shape: tuple[int, ...]
    num_classes: int
    class_names: tuple[str, ...]
    feature_names: tuple[str, ...] = ()
    input_dtype: str = ""

    @property
    def num_features(self) -> int:
        """Number of scalars in one sample."""
        return int(np.prod(self.input_shape))


@dataclass(frozen=True)
class Split:
    """Features and labels of one split (a client's train or test data, or the central test)."""

    x: npt.NDArray[Any]
    y: npt.NDArray[Any]

    def __post_init__(self) -> None:
        if len(self.x) != len(self.y):
            raise DataError(f"split has {len(self.x)} feature rows but {len(self.y)} labels")

    def __len__(self) -> int:
        return len(self.y)


@dataclass(frozen=True)
class ClientData:
    """One client's local data: what it trains on and what it evaluates on."""

    client_id: int
    train: Split
    test: Split


@dataclass(frozen=True)
class Federation:
    """All clients' data, client by client in one array, plus a central test set.

    Attributes:
        info: what the model needs to know (input shape, classes).
        x: features of every client's rows, client by client.
        y: labels, aligned with ``x``.
        offsets: ``num_clients + 1`` increasing row offsets; client ``i`` owns
            ``offsets[i]:offsets[i+1]``.
        train_counts: how many of each client's rows (from its first) are training rows.
        central_test: the held-out test set for central evaluation.
        client_names: optional readable name per client (e.g. the hospital).
        preprocessing: how tabular features were made (JSON-ready): ``mode`` ``local``
            with the declared ``pipeline``, or ``federated`` with the ``fitted`` pipeline
            every client used; empty for data without preprocessing.
    """

    info: DatasetInfo
    x: npt.NDArray[Any]
    y: npt.NDArray[Any]
    offsets: IntArray
    train_counts: IntArray
    central_test: Split
    client_names: tuple[str, ...] = field(default=())
    preprocessing: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n_clients = len(self.offsets) - 1
        if n_clients < 1 or self.offsets[0] != 0 or self.offsets[-1] != len(self.y):
            raise DataError("federation offsets must start at 0 and end at the number of rows")
        if len(self.x) != len(self.y):
            raise DataError(f"federation has {len(self.x)} feature rows but {len(self.y)} labels")
        sizes = np.diff(self.offsets)
        if (sizes < 0).any():
            raise DataError("federation offsets must be non-decreasing")
        if len(self.train_counts) != n_clients or (self.train_counts > sizes).any() or (self.train_counts < 0).any():
            raise DataError("train_counts must give, per client, a count within its number of rows")
        if self.client_names and len(self.client_names) != n_clients:
            raise DataError(f"{len(self.client_names)} client names for {n_clients} clients")

    @property
    def num_clients(self) -> int:
        """How many clients the federation has (the population)."""
        return len(self.offsets) - 1

    @property
    def sizes(self) -> IntArray:
        """Rows per client (train + local test)."""
        return np.diff(self.offsets)

    @property
    def test_counts(self) -> IntArray:
        """Local test rows per client."""
        return self.sizes - self.train_counts

    def client_name(self, client_id: int) -> str:
        """A readable name for a client: its natural name if it has one, else its id."""
        return self.client_names[client_id] if self.client_names else str(client_id)

    def client(self, client_id: int) -> ClientData:
        """One client's data, as views into the federation's arrays (no copy).

        Raises:
            DataError: if there is no such client.
        """
        if not 0 <= client_id < self.num_clients:
            raise DataError(f"no client {client_id}; client ids run from 0 to {self.num_clients - 1}")
        start, end = int(self.offsets[client_id]), int(self.offsets[client_id + 1])
        mid = start + int(self.train_counts[client_id])
        return ClientData(
            client_id,
            Split(self.x[start:mid], self.y[start:mid]),
            Split(self.x[mid:end], self.y[mid:end]),
        )
