"""Framework-free building blocks: params, updates, config, errors, random streams."""

from sheaf.core.config import (
    DataConfig,
    EngineConfig,
    EvalConfig,
    ModelConfig,
    RunConfig,
    StrategyConfig,
    TrainConfig,
    apply_overrides,
    load_config,
)
from sheaf.core.errors import (
    BackendError,
    ClientFailure,
    ConfigError,
    DataError,
    SheafError,
    StoreError,
    StrategyError,
    TaskError,
)
from sheaf.core.exactsum import MAX_TERMS, ExactSum
from sheaf.core.params import Array, Params, ParamSpec
from sheaf.core.rng import Purpose, counter_uniforms, seed_for, seeds_for, stream
from sheaf.core.tensor import ALLOWED_DTYPES, array_from_record, array_to_record
from sheaf.core.tree import decode_tree, encode_tree
from sheaf.core.update import Metrics, Scalar, TensorGroups, Update, check_update, validate_metrics

__all__ = [
    "ALLOWED_DTYPES",
    "MAX_TERMS",
    "Array",
    "BackendError",
    "ClientFailure",
    "ConfigError",
    "DataConfig",
    "DataError",
    "EngineConfig",
    "EvalConfig",
    "ExactSum",
    "Metrics",
    "ModelConfig",
    "ParamSpec",
    "Params",
    "Purpose",
    "RunConfig",
    "Scalar",
    "SheafError",
    "StoreError",
    "StrategyConfig",
    "StrategyError",
    "TaskError",
    "TensorGroups",
    "TrainConfig",
    "Update",
    "apply_overrides",
    "array_from_record",
    "array_to_record",
    "check_update",
    "counter_uniforms",
    "decode_tree",
    "encode_tree",
    "load_config",
    "seed_for",
    "seeds_for",
    "stream",
    "validate_metrics",
]
