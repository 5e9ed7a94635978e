"""Strategies by name, built from the ``[strategy]`` section of a run config.

Each registered factory's keyword parameters are its hyperparameters; any other key of
the section is rejected with the list of valid ones.

Example:
    >>> from sheaf.core.config import StrategyConfig
    >>> build_strategy(StrategyConfig(name="fedavg")).name
    'fedavg'
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable
from typing import Any

from sheaf.core.config import StrategyConfig
from sheaf.core.errors import ConfigError
from sheaf.strategies.base import Strategy
from sheaf.strategies.ditto import ditto
from sheaf.strategies.fedavg import fedavg
from sheaf.strategies.fednova import fednova
from sheaf.strategies.fedopt import fedadagrad, fedadam, fedavgm, fedyogi
from sheaf.strategies.fedper import fedper
from sheaf.strategies.fedprox import fedprox
from sheaf.strategies.krum import bulyan, krum, multikrum
from sheaf.strategies.qfedavg import qfedavg
from sheaf.strategies.robust import median, trimmed_mean
from sheaf.strategies.scaffold import scaffold

__all__ = ["STRATEGIES", "available_strategies", "build_strategy", "describe_strategy", "register_strategy"]

#: Strategy name -> factory; keyword parameters of the factory are its hyperparameters.
STRATEGIES: dict[str, Callable[..., Strategy]] = {
    "bulyan": bulyan,
    "ditto": ditto,
    "fedadagrad": fedadagrad,
    "fedadam": fedadam,
    "fedavg": fedavg,
    "fedavgm": fedavgm,
    "fednova": fednova,
    "fedper": fedper,
    "fedprox": fedprox,
    "fedyogi": fedyogi,
    "krum": krum,
    "median": median,
    "multikrum": multikrum,
    "qfedavg": qfedavg,
    "scaffold": scaffold,
    "trimmed_mean": trimmed_mean,
}


def register_strategy(name: str, factory: Callable[..., Strategy]) -> None:
    """Make ``factory`` selectable as ``strategy.name = name``."""
    STRATEGIES[name] = factory


def available_strategies() -> list[str]:
    """Names of every registered strategy."""
    return sorted(STRATEGIES)


def build_strategy(config: StrategyConfig) -> Strategy:
    """Build the configured strategy with its hyperparameters.

    Raises:
        ConfigError: on an unknown strategy name or hyperparameter, naming the valid ones.
    """
    factory = STRATEGIES.get(config.name)
    if factory is None:
        raise ConfigError(f"unknown strategy {config.name!r}; choose one of: {', '.join(available_strategies())}")
    accepted = list(inspect.signature(factory).parameters)
    for key in config.options:
        if key not in accepted:
            valid = ["fraction", "min_clients", "sampling", *accepted]
            close = difflib.get_close_matches(key, valid, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"unknown setting strategy.{key} for {config.name!r}{hint} valid: {', '.join(valid)}")
    try:
        return factory(**config.options)
    except TypeError as exc:
        raise ConfigError(f"bad hyperparameters for strategy {config.name!r}: {exc}") from None


def describe_strategy(name: str) -> dict[str, Any]:
    """What ``sheaf strategies`` shows: summary, hyperparameters with defaults, sum-only or not.

    Raises:
        ConfigError: if no strategy has that name.
    """
    factory = STRATEGIES.get(name)
    if factory is None:
        raise ConfigError(f"unknown strategy {name!r}; choose one of: {', '.join(available_strategies())}")
    doc = inspect.getdoc(factory) or ""
    strategy = factory()
    return {
        "name": name,
        "summary": doc.split("\n", 1)[0].replace("``", ""),
        "hyperparameters": {
            key: param.default
            for key, param in inspect.signature(factory).parameters.items()
            if param.default is not inspect.Parameter.empty
        },
        "sum_only": not strategy.needs_updates,
        "client_steps": [step.name for step in strategy.client_steps],
        "min_updates": strategy.min_updates,
    }
