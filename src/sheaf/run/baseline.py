"""The pooled baseline: what training would reach if the clients' data could be pooled.

The baseline trains the run's model once on the union of every client's *training*
rows — preprocessing fitted on those pooled rows, as a central data scientist would — and
evaluates it on exactly the rows the federation's central evaluation uses. It is the
yardstick federated results are read against ("FedAvg reaches 0.78 where pooling reaches
0.79"); it never runs inside a federation.

Example:
    >>> from sheaf.core.config import load_config
    >>> result = pooled_baseline(load_config(overrides=["dataset=heart", "partition=natural", "clients=4", "rounds=5"]))
    >>> result.train_examples + result.test_examples
    920
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import pandas as pd

from sheaf.core.config import RunConfig
from sheaf.core.rng import Purpose, seed_for
from sheaf.data.catalog import assign_rows, dataset_info, load_dataset
from sheaf.data.dataset import Split
from sheaf.task.base import FitInstructions, Task, prepare_worker
from sheaf.task.factory import build_task

__all__ = ["BaselineResult", "pooled_baseline"]


@dataclass(frozen=True)
class BaselineResult:
    """The pooled model's figures on the federation's central test rows.

    Attributes:
        loss: mean test loss.
        metrics: the task's test metrics (e.g. ``accuracy``).
        epochs: passes over the pooled training rows.
        train_examples: pooled training rows.
        test_examples: test rows.
    """

    loss: float
    metrics: dict[str, float]
    epochs: int
    train_examples: int
    test_examples: int


def pooled_baseline(config: RunConfig, *, task: Task | None = None, epochs: int | None = None) -> BaselineResult:
    """Train the run's model on all clients' training rows pooled, then test it.

    Args:
        config: the run config (dataset, partition, model, local training settings).
        task: the task to train; default the one the config builds.
        epochs: passes over the pooled data; default as many as the federation makes in
            total, ``rounds * train.epochs * strategy.fraction`` (at least 1).

    Returns:
        Test loss and metrics on the rows the federation is evaluated on.

    Raises:
        SheafError: if the dataset or partition is invalid.
    """
    raw = load_dataset(config.data.dataset)
    rows = assign_rows(config.data, raw, config.seed)
    train_rows = rows.train_rows()
    names: tuple[str, ...] = ()
    if raw.preprocessor is not None:
        assert isinstance(raw.features, pd.DataFrame)
        frame = raw.features
        fitted = raw.preprocessor.fit(frame.iloc[train_rows])
        test_rows = rows.local_test_rows()
        train = Split(fitted.transform(frame.iloc[train_rows]), raw.labels[train_rows])
        test = Split(fitted.transform(frame.iloc[test_rows]), raw.labels[test_rows])
        names = fitted.feature_names
    else:
        features = np.asarray(raw.features)
        train = Split(features[train_rows], raw.labels[train_rows])
        if raw.test is not None:
            test = Split(*raw.test)
        else:
            central = rows.central_rows if rows.central_rows is not None else rows.local_test_rows()
            test = Split(features[central], raw.labels[central])

    model = task if task is not None else build_task(config, dataset_info(raw, train.x, names))
    # The run's torch threads, not whatever this process last set: the count changes the
    # weights (DESIGN.md), and the baseline must give the same figure in every process.
    prepare_worker(model, config.threads)
    passes = epochs or max(1, round(config.rounds * config.train.epochs * config.strategy.fraction))
    instructions = FitInstructions(
        round=0,
        client_id=-1,
        train=dataclasses.replace(config.train, epochs=passes),
        seed=seed_for(config.seed, Purpose.FIT),
    )
    trained = model.fit(model.init_params(seed_for(config.seed, Purpose.INIT)), train, instructions)
    result = model.evaluate(trained.params, test)
    return BaselineResult(result.loss, dict(result.metrics), passes, len(train), len(test))
