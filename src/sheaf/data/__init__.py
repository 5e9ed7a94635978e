"""Datasets (offline), partitioners, local preprocessing and the federation of client data."""

from sheaf.data.catalog import (
    DatasetSpec,
    RowAssignment,
    assign_rows,
    available_datasets,
    build_federation,
    dataset_info,
    load_dataset,
    local_split,
    partition_rows,
    register_dataset,
)
from sheaf.data.dataset import ClientData, DatasetInfo, Federation, Split
from sheaf.data.partition import (
    PARTITIONERS,
    Partition,
    partition_dirichlet,
    partition_iid,
    partition_natural,
    partition_quantity,
    partition_shards,
)
from sheaf.data.preprocess import FittedTabular, TabularPreprocessor, TabularSchema
from sheaf.data.sources import (
    FASHION_MNIST_DIR,
    HEART_SCHEMA,
    RawDataset,
    load_digits,
    load_fashion_mnist,
    load_heart,
    read_idx,
)
from sheaf.data.summary import partition_summary
from sheaf.data.synthetic import synthetic_federation

__all__ = [
    "FASHION_MNIST_DIR",
    "HEART_SCHEMA",
    "PARTITIONERS",
    "ClientData",
    "DatasetInfo",
    "DatasetSpec",
    "Federation",
    "FittedTabular",
    "Partition",
    "RawDataset",
    "RowAssignment",
    "Split",
    "TabularPreprocessor",
    "TabularSchema",
    "assign_rows",
    "available_datasets",
    "build_federation",
    "dataset_info",
    "load_dataset",
    "load_digits",
    "load_fashion_mnist",
    "load_heart",
    "local_split",
    "partition_dirichlet",
    "partition_iid",
    "partition_natural",
    "partition_quantity",
    "partition_rows",
    "partition_shards",
    "partition_summary",
    "read_idx",
    "register_dataset",
    "synthetic_federation",
]
