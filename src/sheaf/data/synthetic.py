"""Synthetic federations of any size: logistic-regression data, dealt in equal shares.

For exercising the engine at scale (a million registered clients on a laptop) without a
dataset of that size: every client holds ``samples`` rows of Gaussian features whose labels
come from one shared linear model plus noise, so a global model can learn them. The data
is built directly in the federation's layout (client by client, local test rows last), in
float32, in shared memory (:mod:`sheaf.data.shared`), with no copy beyond the arrays
themselves: a pool's workers map the very same pages.

Example:
    >>> fed = synthetic_federation(clients=1000, samples=8, features=4, seed=0)
    >>> fed.num_clients, len(fed.client(7).train), len(fed.client(7).test), fed.info.input_shape
    (1000, 6, 2, (4,))
"""

from __future__ import annotations

import numpy as np

from sheaf.core.errors import DataError
from sheaf.core.rng import Purpose, stream
from sheaf.data.dataset import DatasetInfo, Federation, Split
from sheaf.data.shared import shared_empty

__all__ = ["synthetic_federation"]


def _labels(x: np.ndarray, weights: np.ndarray, rng: np.random.Generator, block: int = 1 << 20) -> np.ndarray:
    y = shared_empty((len(x),), np.int64)
    for start in range(0, len(x), block):  # bounded temporaries for many millions of rows
        logits = x[start : start + block] @ weights
        logits += rng.standard_normal(logits.shape, dtype=np.float32)
        y[start : start + block] = logits.argmax(axis=1)
    return y


def synthetic_federation(
    clients: int,
    samples: int = 8,
    features: int = 16,
    classes: int = 2,
    *,
    test_fraction: float = 0.2,
    central_test: int = 10_000,
    seed: int = 0,
) -> Federation:
    """A federation of ``clients`` clients with ``samples`` logistic-regression rows each.

    Args:
        clients: number of clients (the population).
        samples: rows per client.
        features: features per row (standard normal).
        classes: number of classes; labels are the arg-max of a shared random linear map
            of the features plus unit Gaussian noise.
        test_fraction: share of each client's rows kept as its local test split (rounded
            as :func:`~sheaf.data.catalog.local_split` does, leaving at least one to train).
        central_test: rows of the central test set, drawn from the same distribution.
        seed: the seed of every random draw.

    Returns:
        The federation (dataset name ``synthetic``).

    Raises:
        DataError: on a non-positive size or a test fraction outside [0, 1).
    """
    if min(clients, samples, features) < 1 or classes < 2:
        raise DataError(
            f"a synthetic federation needs clients, samples, features >= 1 and classes >= 2, "
            f"got {clients}, {samples}, {features}, {classes}"
        )
    if not 0 <= test_fraction < 1:
        raise DataError(f"test_fraction must be in [0, 1), got {test_fraction}")
    rng = stream(seed, Purpose.PARTITION)
    weights = rng.standard_normal((features, classes), dtype=np.float32)
    x = shared_empty((clients * samples, features), np.float32)
    rng.standard_normal(dtype=np.float32, out=x)
    y = _labels(x, weights, rng)
    held_x = rng.standard_normal((central_test, features), dtype=np.float32)
    held = Split(held_x, _labels(held_x, weights, rng))
    tests = min(int(np.floor(test_fraction * samples + 0.5)), samples - 1)
    offsets = shared_empty((clients + 1,), np.int64)
    np.multiply(np.arange(clients + 1, dtype=np.int64), samples, out=offsets)
    train_counts = shared_empty((clients,), np.int64)
    train_counts[...] = samples - tests
    info = DatasetInfo("synthetic", (features,), classes, tuple(str(k) for k in range(classes)))
    return Federation(info, x, y, offsets, train_counts, held)
