"""Checks of strategy hyperparameters: one clear ConfigError naming the setting.

Hyperparameters arrive from TOML or ``--set`` as plain scalars; these helpers refuse the
wrong type (a boolean or string where a number belongs, a fraction where a count belongs)
and out-of-range values, naming ``strategy.<key>`` and the strategy.
"""

from __future__ import annotations

import math

from sheaf.core.errors import ConfigError

__all__: list[str] = []


def real(
    strategy: str,
    key: str,
    value: object,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """``value`` as a float within the given bounds, or a ConfigError naming ``strategy.key``."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigError(f"strategy.{key} must be a number for {strategy}, got {value!r}")
    number = float(value)
    too_low = low is not None and (number <= low if low_open else number < low)
    too_high = high is not None and (number >= high if high_open else number > high)
    if too_low or too_high:
        left = "" if low is None else f"{'>' if low_open else '>='} {low:g}"
        right = "" if high is None else f"{'<' if high_open else '<='} {high:g}"
        bounds = " and ".join(part for part in (left, right) if part)
        raise ConfigError(f"strategy.{key} must be {bounds} for {strategy}, got {value!r}")
    return number


def count(strategy: str, key: str, value: object, *, low: int = 0) -> int:
    """``value`` as an integer >= ``low``, or a ConfigError naming ``strategy.key``."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"strategy.{key} must be a whole number for {strategy}, got {value!r}")
    if value < low:
        raise ConfigError(f"strategy.{key} must be >= {low} for {strategy}, got {value}")
    return value
