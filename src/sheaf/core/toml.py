"""Writing a config back as TOML that ``sheaf simulate CONFIG`` reads unchanged.

Python reads TOML (:mod:`tomllib`) but does not write it; a run's config is plain data
(numbers, booleans, strings, lists and one level of tables), so this small writer covers it.
Top-level keys come first, then one ``[section]`` per table; nested tables inside a
section (e.g. ``privacy.client_budgets``) are written inline.

Example:
    >>> text = dumps({"seed": 0, "data": {"dataset": "heart", "alpha": 0.5}, "model": {"hidden": [16]}})
    >>> print(text)
    seed = 0
    <BLANKLINE>
    [data]
    dataset = "heart"
    alpha = 0.5
    <BLANKLINE>
    [model]
    hidden = [16]
    >>> import tomllib
    >>> tomllib.loads(text)["model"]["hidden"]
    [16]
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

__all__ = ["dumps", "toml_value"]


def _key(key: object) -> str:
    text = str(key)
    bare = text and all(c.isalnum() or c in "_-" for c in text) and text.isascii()
    return text if bare else json.dumps(text)


def toml_value(value: Any) -> str:
    """One value as a TOML literal (strings are escaped JSON-style, which TOML accepts)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{_key(k)} = {toml_value(v)}" for k, v in value.items()) + "}"
    return json.dumps(str(value), ensure_ascii=False)


def dumps(config: Mapping[str, Any]) -> str:
    """A nested config mapping as TOML text: top-level keys, then one table per section."""
    lines = [f"{_key(k)} = {toml_value(v)}" for k, v in config.items() if not isinstance(v, Mapping)]
    for section, values in config.items():
        if isinstance(values, Mapping):
            lines += ["", f"[{_key(section)}]"] + [f"{_key(k)} = {toml_value(v)}" for k, v in values.items()]
    return "\n".join(lines)
