"""Messages between a backend and its workers: a JSON header and raw tensors, never pickle.

A message is ``8-byte header length | JSON header | tensor bytes...``; the header lists each
tensor's dtype and shape, and decoding validates them (allow-listed dtypes, exact byte
counts) as the run store does. Workers run user code, so what they send back is decoded
as data only.

Example:
    >>> import numpy as np
    >>> header, arrays = unpack(pack({"op": "fit", "client": 3}, [np.arange(3.0)]))
    >>> header["client"], arrays[0].tolist()
    (3, [0.0, 1.0, 2.0])
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from sheaf.core.errors import BackendError, SheafError
from sheaf.core.params import Params
from sheaf.core.tensor import array_from_record, array_to_record
from sheaf.core.update import TensorGroups

__all__ = [
    "decode_groups",
    "decode_params",
    "encode_groups",
    "encode_params",
    "fit_message",
    "fit_states",
    "pack",
    "unpack",
]

_LENGTH = 8
_RESERVED = "_tensors"


def pack(header: Mapping[str, Any], arrays: Sequence[np.ndarray[Any, Any]] = ()) -> bytes:
    """Encode a header and tensors as one message."""
    records = [array_to_record(np.asarray(array)) for array in arrays]
    head = json.dumps({**header, _RESERVED: [[dtype, list(shape)] for dtype, shape, _ in records]}).encode()
    return b"".join([len(head).to_bytes(_LENGTH, "little"), head, *(data for _, _, data in records)])


def unpack(message: bytes) -> tuple[dict[str, Any], list[np.ndarray[Any, Any]]]:
    """Decode a message from :func:`pack`; tensors are read-only views of ``message``.

    Raises:
        BackendError: if the message is malformed.
    """
    view = memoryview(message)
    try:
        size = int.from_bytes(view[:_LENGTH], "little")
        header = json.loads(bytes(view[_LENGTH : _LENGTH + size]))
        specs = header.pop(_RESERVED)
        arrays = []
        offset = _LENGTH + size
        for dtype, shape in specs:
            nbytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
            arrays.append(array_from_record(dtype, shape, view[offset : offset + nbytes]))  # type: ignore[arg-type]
            offset += nbytes
        if offset != len(view):
            raise ValueError(f"{len(view) - offset} bytes left over")
        if not isinstance(header, dict):
            raise TypeError(f"its header is a {type(header).__name__}, not an object")
    except (SheafError, ValueError, TypeError, KeyError, AttributeError, OverflowError, RecursionError) as exc:
        raise BackendError(f"malformed message from a worker: {str(exc)[:200]}") from None
    return header, arrays


def encode_params(params: Mapping[str, Any] | None) -> tuple[list[str], list[np.ndarray[Any, Any]]]:
    """Names and arrays of params (empty for None)."""
    if params is None:
        return [], []
    return list(params), [np.asarray(a) for a in params.values()]


def decode_params(names: Sequence[str], arrays: Sequence[np.ndarray[Any, Any]]) -> Params:
    """Params from :func:`encode_params`' names and arrays.

    Raises:
        BackendError: if the counts differ.
    """
    if not isinstance(names, list | tuple) or not all(isinstance(n, str) for n in names):
        raise BackendError("malformed message from a worker: tensor names must be a list of strings")
    if len(names) != len(arrays):
        raise BackendError(f"malformed message from a worker: {len(names)} names for {len(arrays)} tensors")
    try:
        return Params(dict(zip(names, arrays, strict=True)))
    except (SheafError, TypeError, ValueError) as exc:
        raise BackendError(f"malformed message from a worker: {str(exc)[:200]}") from None


def _pairs(layout: object, what: str) -> list[tuple[Any, Any]]:
    """``layout`` as a list of 2-element entries, or a BackendError."""
    if not isinstance(layout, list | tuple) or not all(isinstance(e, list | tuple) and len(e) == 2 for e in layout):
        raise BackendError(f"malformed message from a worker: {what} must be a list of pairs")
    return [(e[0], e[1]) for e in layout]


def encode_groups(groups: TensorGroups | None) -> tuple[list[list[Any]], list[np.ndarray[Any, Any]]]:
    """``[[group, [names...]], ...]`` and the arrays, group by group."""
    layout: list[list[Any]] = []
    arrays: list[np.ndarray[Any, Any]] = []
    for group, params in (groups or {}).items():
        names, values = encode_params(params)
        layout.append([group, names])
        arrays += values
    return layout, arrays


def decode_groups(layout: Sequence[Sequence[Any]], arrays: Sequence[np.ndarray[Any, Any]]) -> dict[str, Params]:
    """Tensor groups from :func:`encode_groups`' layout and arrays.

    Raises:
        BackendError: if the layout and arrays do not fit.
    """
    out: dict[str, Params] = {}
    offset = 0
    for group, names in _pairs(layout, "tensor groups"):
        if not isinstance(names, list | tuple):
            raise BackendError("malformed message from a worker: a group's tensor names must be a list")
        out[str(group)] = decode_params(names, arrays[offset : offset + len(names)])
        offset += len(names)
    if offset != len(arrays):
        raise BackendError("malformed message from a worker: tensor groups do not match their tensors")
    return out


def fit_message(clients: Sequence[int], states: Mapping[int, TensorGroups]) -> bytes:
    """The ``fit`` message for a chunk of clients, with the persistent states of those that have one."""
    layouts: list[list[Any]] = []
    tensors: list[np.ndarray[Any, Any]] = []
    for client in clients:
        if client in states:
            layout, values = encode_groups(states[client])
            layouts.append([client, layout])
            tensors += values
    return pack({"op": "fit", "clients": list(clients), "states": layouts}, tensors)


def fit_states(
    layouts: Sequence[Sequence[Any]], arrays: Sequence[np.ndarray[Any, Any]]
) -> dict[int, dict[str, Params]]:
    """The per-client states of a ``fit`` message (see :func:`fit_message`)."""
    out: dict[int, dict[str, Params]] = {}
    offset = 0
    for client, layout in _pairs(layouts, "client states"):
        if isinstance(client, bool) or not isinstance(client, int):
            raise BackendError(f"malformed message from a worker: client id {str(client)[:20]!r}")
        pairs = _pairs(layout, "tensor groups")
        count = sum(len(names) if isinstance(names, list | tuple) else 0 for _, names in pairs)
        out[client] = decode_groups(layout, arrays[offset : offset + count])
        offset += count
    return out
