"""What a deployed party loads on its own machine: its data file and its task.

A client reads its own file — CSV, Parquet or NPZ — and makes of it exactly what the
simulation makes of the same rows, so the same seed gives the same model:

- rows stay in file order; the local train/test split is
  :func:`~sheaf.data.local_split` of (client id, row count, test fraction, seed), the same
  counter-based shuffle the simulation uses — with the client's *own* test fraction and
  split seed (its policy: :mod:`sheaf.deploy.policy`), never the server's;
- a tabular dataset of the catalog (e.g. ``heart``) brings its own columns, labels and
  preprocessing (:attr:`~sheaf.data.DatasetSpec.from_table`), fitted on the client's own
  training rows only;
- any other CSV/Parquet file has a label column (``--label``, default ``label``) and
  numeric feature columns; an NPZ file holds arrays ``x`` and ``y`` (and, optionally,
  ``x_test``/``y_test`` as an explicit local test split). NPZ files are read with
  ``allow_pickle=False``.

The server's task comes from its run config (``task = "module:attr"``, or the built-in
model sized by the catalog dataset's :class:`~sheaf.data.DatasetInfo`) or its command line
(:func:`deployment_task`). A client's task comes from *its own* command line or the
built-in model the run describes, within its own policy (:func:`client_task`): a client
never imports code a server names.

Example:
    >>> import tempfile, pathlib, numpy as np
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "mine.npz"
    >>> np.savez(path, x=np.ones((10, 3), np.float32), y=np.arange(10) % 2)
    >>> data = load_client_data(path, client_id=0, test_fraction=0.2)
    >>> len(data.train), len(data.test)
    (8, 2)
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from sheaf.core.config import ModelConfig, RunConfig
from sheaf.core.errors import ConfigError, DataError
from sheaf.data.catalog import dataset_spec, load_dataset, local_split
from sheaf.data.dataset import ClientData, DatasetInfo, Split
from sheaf.data.sources import RawDataset
from sheaf.deploy.description import RunDescription
from sheaf.deploy.policy import TrainingPolicy
from sheaf.task.base import Task
from sheaf.task.factory import build_task, load_task

__all__ = ["catalog_info", "client_task", "deployment_task", "load_client_data", "load_test_data"]


def catalog_info(dataset: str) -> DatasetInfo | None:
    """What a model must know about a catalog dataset (None if it is not in the catalog).

    Raises:
        DataError: if the dataset is in the catalog but cannot be loaded here.
    """
    if dataset_spec(dataset) is None:
        return None
    raw = load_dataset(dataset)
    if raw.preprocessor is not None:
        names = raw.preprocessor.schema.feature_names
        return DatasetInfo(raw.name, (len(names),), len(raw.class_names), raw.class_names, names)
    features = np.asarray(raw.features)
    return DatasetInfo(raw.name, tuple(features.shape[1:]), len(raw.class_names), raw.class_names)


def deployment_task(config: RunConfig, spec: str = "") -> Task:
    """The run's task: ``spec`` if given, else ``config.task``, else the built-in model.

    Raises:
        ConfigError: if the built-in model is asked for a dataset outside the catalog.
        TaskError: if the task cannot be loaded.
    """
    info = catalog_info(config.data.dataset)
    if spec or config.task:
        return load_task(spec or config.task, info)
    if info is None:
        raise ConfigError(
            f"dataset {config.data.dataset!r} is not in sheaf's catalog, so the built-in model cannot size itself; "
            "name your task with task=module:attr"
        )
    return build_task(config, info)


def client_task(
    description: RunDescription, policy: TrainingPolicy, spec: str = "", *, info: DatasetInfo | None
) -> Task:
    """A client's task: its own ``spec`` (``--task module:attr``) if given, else the built-in
    model the run describes — if the client's policy agrees to it and it is within the
    policy's size limit, checked before a single parameter is allocated.

    The server never names code for the client to import: ``spec`` is the client's own.

    Args:
        description: what the server said about the run.
        policy: the client's training policy (the model it agrees to, its size limit).
        spec: the client's own ``module:attr``, if it brings its task.
        info: the catalog's facts about the run's dataset (:func:`catalog_info`).

    Raises:
        ConfigError: if the described model is not the one the policy agrees to, is larger
            than ``policy.max_model_mb``, or the dataset is outside sheaf's catalog.
        TaskError: if ``spec`` cannot be loaded.
    """
    if spec:
        return load_task(spec, info)
    described = ModelConfig(description.model, description.hidden)
    agreed = ModelConfig(policy.model or described.name, policy.hidden or described.hidden)
    if agreed != described:
        raise ConfigError(
            f"the run uses model {described.name} {list(described.hidden)}, this client's policy agrees to "
            f"{agreed.name} {list(agreed.hidden)} (training.model, training.hidden)"
        )
    if info is None:
        raise ConfigError(
            f"dataset {description.dataset!r} is not in sheaf's catalog, so the built-in model cannot size itself; "
            "bring your own task: --task module:attr"
        )
    from sheaf.task.models import model_factory
    from sheaf.task.torch_task import TorchTask

    factory = model_factory(
        described, info.num_features, info.num_classes, info.input_shape, input_dtype=info.input_dtype
    )
    _check_model_size(factory, policy.max_model_mb)
    return TorchTask(factory)


def _check_model_size(factory: Any, max_mb: float) -> None:
    import torch

    with torch.device("meta"):  # shapes only: nothing is allocated
        module = factory()
    size = sum(p.numel() * p.element_size() for p in module.parameters())
    if size > max_mb * (1 << 20):
        raise ConfigError(
            f"the run's model has {size / (1 << 20):.4g} MiB of parameters, more than this client's "
            f"training.max_model_mb={max_mb:g}"
        )


def _read_table(path: Path) -> pd.DataFrame | dict[str, npt.NDArray[Any]]:
    suffix = path.suffix.lower()
    if not path.is_file():
        raise DataError(f"data file {str(path)!r} not found")
    try:
        if suffix == ".npz":
            with np.load(path, allow_pickle=False) as archive:
                return {key: archive[key] for key in archive.files}
        if suffix in (".csv", ".gz"):
            return pd.read_csv(path)
        if suffix in (".parquet", ".pq"):
            if importlib.util.find_spec("pyarrow") is None:  # pandas reads Parquet through it
                raise DataError(f"reading {str(path)!r} needs pyarrow: pip install 'sheaf[parquet]', or use CSV or NPZ")
            return pd.read_parquet(path)
    except (OSError, ValueError, ImportError) as exc:
        raise DataError(f"cannot read {str(path)!r}: {exc}") from None
    raise DataError(f"data file {str(path)!r} must be .csv, .parquet or .npz, got {suffix or 'no suffix'!r}")


def _generic_table(frame: pd.DataFrame, label: str, path: Path) -> tuple[npt.NDArray[Any], npt.NDArray[Any]]:
    if label not in frame.columns:
        raise DataError(
            f"{str(path)!r} has no label column {label!r}; its columns: {list(frame.columns)[:12]} (use --label)"
        )
    features = frame.drop(columns=[label])
    bad = [c for c in features.columns if not pd.api.types.is_numeric_dtype(features[c])]
    if bad:
        raise DataError(f"{str(path)!r}: feature columns {bad[:8]} are not numeric; encode them first")
    if features.isna().to_numpy().any():
        raise DataError(f"{str(path)!r} has missing feature values; impute them first")
    return features.to_numpy(np.float32), _labels(frame[label].to_numpy(), path)


def _labels(values: npt.NDArray[Any], path: Path) -> npt.NDArray[Any]:
    if np.issubdtype(values.dtype, np.integer) or np.issubdtype(values.dtype, np.bool_):
        return values.astype(np.int64)
    if np.issubdtype(values.dtype, np.floating) and np.all(np.isfinite(values)):
        return values.astype(np.int64) if np.all(values == np.round(values)) else values
    raise DataError(f"{str(path)!r}: labels must be numbers (class ids), got dtype {values.dtype}")


def _check_shape(x: npt.NDArray[Any], info: DatasetInfo | None, path: Path) -> None:
    if info is not None and tuple(x.shape[1:]) != info.input_shape:
        raise DataError(
            f"{str(path)!r} gives samples of shape {tuple(x.shape[1:])}, the run's model expects {info.input_shape}"
        )


def load_client_data(
    path: str | Path,
    client_id: int,
    *,
    dataset: str = "",
    test_fraction: float = 0.2,
    split_seed: int = 0,
    label: str = "label",
    info: DatasetInfo | None = None,
) -> ClientData:
    """Load a client's own file and split it as the simulation would (see the module).

    Args:
        path: a ``.csv``, ``.parquet`` or ``.npz`` file.
        client_id: the client's id in the run.
        dataset: the catalog dataset the file holds ("" or a name outside the catalog: a
            plain table).
        test_fraction: the share of rows the client keeps as its test split.
        split_seed: the seed of that split (a simulation's seed reproduces its split).
        label: the label column of a CSV/Parquet file outside the catalog.
        info: the model's expectations, to check the samples' shape.

    Raises:
        DataError: if the file cannot be read or does not fit the run.
    """
    file = Path(path)
    table = _read_table(file)
    if isinstance(table, dict):
        missing = {"x", "y"} - set(table)
        if missing:
            raise DataError(f"{str(file)!r} lacks the array(s) {sorted(missing)}; an NPZ file holds x and y")
        x, y = np.asarray(table["x"]), _labels(np.asarray(table["y"]), file)
        if len(x) != len(y) or len(x) == 0:
            raise DataError(f"{str(file)!r} has {len(x)} samples and {len(y)} labels; they must match and be > 0")
        _check_shape(x, info, file)
        if "x_test" in table and "y_test" in table:
            test = Split(np.asarray(table["x_test"]), _labels(np.asarray(table["y_test"]), file))
            return ClientData(client_id, Split(x, y), test)
        order, train_count = local_split(client_id, len(y), test_fraction, split_seed)
        x, y = x[order], y[order]
        return ClientData(client_id, Split(x[:train_count], y[:train_count]), Split(x[train_count:], y[train_count:]))

    spec = dataset_spec(dataset) if dataset else None
    raw: RawDataset | None = spec.from_table(table) if spec is not None and spec.from_table is not None else None
    if raw is None:
        x, y = _generic_table(table, label, file)
        order, train_count = local_split(client_id, len(y), test_fraction, split_seed)
        x, y = x[order], y[order]
    else:
        order, train_count = local_split(client_id, len(raw), test_fraction, split_seed)
        y = raw.labels[order]
        if raw.preprocessor is not None and isinstance(raw.features, pd.DataFrame):
            # Exactly the simulation's steps: the client's rows in split order, fitted on its own train rows.
            rows = raw.features.iloc[order]
            x = raw.preprocessor.fit(rows.iloc[:train_count]).transform(rows)
        else:
            x = np.asarray(raw.features)[order]
    if len(y) == 0:
        raise DataError(f"{str(file)!r} holds no rows")
    _check_shape(x, info, file)
    return ClientData(client_id, Split(x[:train_count], y[:train_count]), Split(x[train_count:], y[train_count:]))


def load_test_data(
    path: str | Path, config: RunConfig, *, label: str = "label", info: DatasetInfo | None = None
) -> Split:
    """Load a held-out file as a whole test set (the server's optional central test set).

    Tabular catalog datasets are preprocessed with statistics of this file itself.

    Raises:
        DataError: if the file cannot be read or does not fit the run.
    """
    file = Path(path)
    table = _read_table(file)
    if isinstance(table, dict):
        if "x" not in table or "y" not in table:
            raise DataError(f"{str(file)!r} lacks arrays x and y")
        x, y = np.asarray(table["x"]), _labels(np.asarray(table["y"]), file)
    else:
        spec = dataset_spec(config.data.dataset)
        raw = spec.from_table(table) if spec is not None and spec.from_table is not None else None
        if raw is None:
            x, y = _generic_table(table, label, file)
        elif raw.preprocessor is not None and isinstance(raw.features, pd.DataFrame):
            x, y = raw.preprocessor.fit(raw.features).transform(raw.features), raw.labels
        else:
            x, y = np.asarray(raw.features), raw.labels
    _check_shape(x, info, file)
    return Split(x, y)
