"""The range checks every config section runs on its values: one line, naming the key.

Example:
    >>> check_setting(2 > 1, "train.epochs", ">= 1", 2)
    >>> check_setting(0 > 1, "train.epochs", ">= 1", 0)
    Traceback (most recent call last):
    ...
    sheaf.core.errors.ConfigError: train.epochs must be >= 1, got 0
"""

from __future__ import annotations

import math

from sheaf.core.errors import ConfigError

__all__ = ["check_positive", "check_setting"]


def check_setting(condition: bool, key: str, requirement: str, value: object) -> None:
    """Raise ``ConfigError("<key> must be <requirement>, got <value>")`` unless ``condition``.

    Raises:
        ConfigError: if ``condition`` is false.
    """
    if not condition:
        raise ConfigError(f"{key} must be {requirement}, got {value!r}")


def check_positive(value: float, key: str) -> None:
    """A finite number > 0.

    Raises:
        ConfigError: otherwise.
    """
    check_setting(math.isfinite(value) and value > 0, key, "a finite number > 0", value)
