"""sheaf: federated learning that simulates fast, deploys safely and is honest about privacy.

The public API in one import::

    import sheaf
    result = sheaf.simulate()                       # the quickstart
    result = sheaf.simulate("run.toml", overrides=["rounds=50"])
    print(result.summary())
"""

from sheaf.core import (
    ConfigError,
    DataError,
    Params,
    RunConfig,
    SheafError,
    Update,
)
from sheaf.core._version import __version__
from sheaf.evaluation import History, RoundRecord
from sheaf.run import RunStore, SimulationResult, report_run, simulate
from sheaf.run import load_run_config as load_config
from sheaf.strategies import Strategy, chain, fedavg

__all__ = [
    "ConfigError",
    "DataError",
    "History",
    "Params",
    "RoundRecord",
    "RunConfig",
    "RunStore",
    "SheafError",
    "SimulationResult",
    "Strategy",
    "Update",
    "__version__",
    "chain",
    "fedavg",
    "load_config",
    "report_run",
    "simulate",
]
