"""Safe serialisation of state trees (strategy state, accountant state) without pickle.

A *state tree* is built from ``None``, booleans, ints, floats, strings, NumPy arrays,
:class:`~sheaf.core.params.Params`, tuples (NamedTuples included), lists and dicts with
string or integer keys. :func:`encode_tree` splits it into a JSON structure and a list of
arrays; :func:`decode_tree` rebuilds it. NamedTuple types are never named in the encoding
(that would mean importing whatever the data says); they are restored from a *template* —
the state a fresh ``init`` returns — so only types the program already holds are built.

Example:
    >>> import numpy as np
    >>> from typing import NamedTuple
    >>> class S(NamedTuple):
    ...     step: int
    ...     m: np.ndarray
    >>> structure, arrays = encode_tree(S(3, np.ones(2)))
    >>> decode_tree(structure, arrays, template=S(0, np.zeros(2)))
    S(step=3, m=array([1., 1.]))
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from sheaf.core.errors import SheafError
from sheaf.core.params import Params

__all__ = ["decode_tree", "encode_tree"]


def _is_namedtuple(value: object) -> bool:
    return isinstance(value, tuple) and hasattr(value, "_fields")


def encode_tree(tree: object) -> tuple[str, list[np.ndarray[Any, Any]]]:
    """Split a state tree into a JSON string and the arrays it refers to.

    Raises:
        SheafError: if the tree holds a value of an unsupported type.
    """
    arrays: list[np.ndarray[Any, Any]] = []

    def walk(node: object) -> Any:
        if node is None or isinstance(node, bool | str):
            return node
        if isinstance(node, int | float):
            return node
        if isinstance(node, np.generic):
            return node.item()
        if isinstance(node, np.ndarray):
            arrays.append(node)
            return {"a": len(arrays) - 1}
        if isinstance(node, Params):
            entries = []
            for name, array in node.items():
                arrays.append(array)
                entries.append([name, len(arrays) - 1])
            return {"p": entries}
        if isinstance(node, tuple):
            return {"t": [walk(v) for v in node]}
        if isinstance(node, list):
            return [walk(v) for v in node]
        if isinstance(node, Mapping):
            items = []
            for key, value in node.items():
                if isinstance(key, bool) or not isinstance(key, int | str):
                    raise SheafError(f"state dict keys must be str or int, got {key!r}")
                items.append([key, walk(value)])
            return {"d": items}
        raise SheafError(
            f"cannot store state of type {type(node).__name__}; use arrays, Params, numbers, "
            "strings, tuples, lists or dicts"
        )

    return json.dumps(walk(tree)), arrays


def decode_tree(structure: str, arrays: Sequence[np.ndarray[Any, Any]], template: object = None) -> Any:
    """Rebuild a tree from :func:`encode_tree`'s output.

    Args:
        structure: the JSON string.
        arrays: the arrays, in the order encode_tree returned them.
        template: a tree of the same shape (e.g. a fresh ``init`` state) whose NamedTuple
            types are used for the result; parts it lacks come back as plain tuples.

    Raises:
        SheafError: if the structure is malformed or refers to a missing array.
    """

    def array(index: object) -> np.ndarray[Any, Any]:
        if not isinstance(index, int) or not 0 <= index < len(arrays):
            raise SheafError(f"stored state refers to array {index!r}, which is missing")
        return arrays[index]

    def walk(node: Any, like: object) -> Any:
        if node is None or isinstance(node, bool | int | float | str):
            return node
        if isinstance(node, list):
            items: list[Any] = like if isinstance(like, list) else []
            return [walk(v, items[i] if i < len(items) else None) for i, v in enumerate(node)]
        if isinstance(node, dict) and len(node) == 1:
            ((tag, body),) = node.items()
            if tag == "a":
                return array(body)
            if tag == "p":
                return Params({name: array(i) for name, i in body})
            if tag == "t":
                fields: tuple[Any, ...] = like if isinstance(like, tuple) else ()
                values = [walk(v, fields[i] if i < len(fields) else None) for i, v in enumerate(body)]
                if _is_namedtuple(like) and len(values) == len(fields):
                    return type(like)(*values)
                return tuple(values)
            if tag == "d":
                entries: Mapping[Any, Any] = like if isinstance(like, Mapping) else {}
                return {k: walk(v, entries.get(k)) for k, v in body}
        raise SheafError(f"stored state is malformed near {str(node)[:80]!r}")

    try:
        parsed = json.loads(structure)
    except (json.JSONDecodeError, TypeError, RecursionError) as exc:
        raise SheafError(f"stored state is not valid JSON: {str(exc)[:200]}") from None
    try:
        return walk(parsed, template)
    except (TypeError, ValueError, RecursionError) as exc:  # e.g. a body of the wrong shape, nesting too deep
        raise SheafError(f"stored state is malformed: {str(exc)[:200]}") from None
