"""Shared memory for the pool's workers: the federation's data without a copy, and the params.

The federation's arrays already lie in shared files where sheaf built them
(:mod:`sheaf.data.shared`); :func:`share_arrays` says where, for the workers to map the
same pages, and copies into shared files only what lies elsewhere (arrays the user built
in ordinary memory). The global params sit in a named POSIX shared-memory block
(:class:`SharedArrays`), rewritten each round: every worker maps both, so no client's
data or params are copied or pickled per client.

Example:
    >>> import numpy as np
    >>> block = SharedArrays({"w": np.arange(3.0)})
    >>> memory, arrays = attach(block.handle)
    >>> arrays["w"].tolist(), arrays["w"].flags.writeable
    ([0.0, 1.0, 2.0], False)
    >>> block.write({"w": np.ones(3)}); arrays["w"].tolist()
    [1.0, 1.0, 1.0]
    >>> del arrays; memory.close(); block.close()
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from multiprocessing import shared_memory
from typing import Any

import numpy as np

from sheaf.core.errors import BackendError
from sheaf.data.dataset import DatasetInfo, Federation, Split
from sheaf.data.shared import InheritedFile, SharedSlot, file_of, shared_copy

__all__ = [
    "SharedArrays",
    "SharedData",
    "attach",
    "federation_arrays",
    "federation_from",
    "share_arrays",
    "writable_copy",
]

_ALIGN = 64
_SHM_DIR = "/dev/shm"


def _strides(array: np.ndarray[Any, Any]) -> list[int]:
    """The array's own strides when its bytes are one block (C or Fortran order), else C order's.

    Strides matter beyond addressing: torch picks kernels (e.g. channels-last convolutions)
    from them, and with them its float rounding. A worker must see the strides the parent
    has, or the same client trains to a different model.
    """
    if array.flags.c_contiguous or array.flags.f_contiguous:
        return list(array.strides)
    return list(np.empty(array.shape, array.dtype).strides)


def _layout(arrays: Mapping[str, np.ndarray[Any, Any]]) -> tuple[list[list[Any]], int]:
    layout: list[list[Any]] = []
    offset = 0
    for name, array in arrays.items():
        layout.append([name, array.dtype.str, list(array.shape), offset, _strides(array)])
        offset += -(-array.nbytes // _ALIGN) * _ALIGN
    return layout, max(offset, 1)


def _view(buffer: Any, entry: list[Any]) -> np.ndarray[Any, Any]:
    _, dtype, shape, offset, strides = entry
    return np.ndarray(tuple(shape), np.dtype(dtype), buffer=buffer, offset=offset, strides=tuple(strides))


def _views(buffer: memoryview, layout: list[list[Any]], writable: bool) -> dict[str, np.ndarray[Any, Any]]:
    out: dict[str, np.ndarray[Any, Any]] = {}
    for entry in layout:
        view = _view(buffer, entry)
        view.flags.writeable = writable
        out[entry[0]] = view
    return out


def writable_copy(array: np.ndarray[Any, Any], strides: Sequence[int]) -> np.ndarray[Any, Any]:
    """A writable copy of ``array`` with ``strides`` where they fit a one-block copy (else C order).

    For workers that receive data through a channel that normalises strides (Ray's object
    store): TorchTask copies read-only data, which would normalise them again.
    """
    fresh = np.empty(array.shape, array.dtype)
    wanted = tuple(int(s) for s in strides)
    if len(wanted) == fresh.ndim and all(
        n == 1 or a == b for n, a, b in zip(fresh.shape, fresh.strides, wanted, strict=True)
    ):
        fresh = np.lib.stride_tricks.as_strided(fresh, fresh.shape, wanted)
    fresh[...] = array
    return fresh


class SharedArrays:
    """Copies arrays into a new shared-memory block; :attr:`handle` lets others attach.

    Args:
        arrays: name -> array (any dtype NumPy can describe by its ``dtype.str``).

    Raises:
        BackendError: if the system's shared memory (``/dev/shm``) has too little room.
    """

    def __init__(self, arrays: Mapping[str, np.ndarray[Any, Any]]) -> None:
        self.layout, size = _layout(arrays)
        if os.path.isdir(_SHM_DIR):
            free = shutil.disk_usage(_SHM_DIR).free
            if free < size:
                raise BackendError(
                    f"the pool backend needs {size / 2**20:.0f} MiB of shared memory but {_SHM_DIR} has "
                    f"{free / 2**20:.0f} MiB free; enlarge it (e.g. docker --shm-size) or use backend=vectorized/inline"
                )
        self._memory = shared_memory.SharedMemory(create=True, size=size)
        self.write(arrays)

    @property
    def handle(self) -> dict[str, Any]:
        """What :func:`attach` needs (JSON-ready)."""
        return {"name": self._memory.name, "layout": self.layout}

    def fits(self, arrays: Mapping[str, np.ndarray[Any, Any]]) -> bool:
        """Whether ``arrays`` have exactly this block's names, dtypes and shapes."""
        return _layout(arrays)[0] == self.layout

    def write(self, arrays: Mapping[str, np.ndarray[Any, Any]]) -> None:
        """Overwrite the block's values (same names, dtypes and shapes)."""
        for entry in self.layout:
            _view(self._memory.buf, entry)[...] = arrays[entry[0]]

    def close(self) -> None:
        """Release and remove the block (safe to call twice)."""
        memory, self._memory = self._memory, None  # type: ignore[assignment]
        if memory is not None:
            memory.close()
            with contextlib.suppress(FileNotFoundError):
                memory.unlink()


class _Mapped(shared_memory.SharedMemory):
    """An attached block whose array views may outlive it: never closed on collection.

    ``SharedMemory.__del__`` closes the mapping, which fails (and complains) while NumPy
    views of it exist; a worker's views live as long as the process, and the mapping goes
    with the process.
    """

    def __del__(self) -> None:
        pass


def attach(
    handle: Mapping[str, Any], *, writable: bool = False
) -> tuple[shared_memory.SharedMemory, dict[str, np.ndarray[Any, Any]]]:
    """Map a block made by :class:`SharedArrays`; returns it and views of its arrays.

    Args:
        handle: the block's :attr:`SharedArrays.handle`.
        writable: give writable views. The pool's workers see the federation's data as the
            inline backend does (writable, with the parent's strides), because TorchTask
            copies read-only data and the copy's strides would change its kernels.
    """
    if sys.version_info >= (3, 13):
        memory: shared_memory.SharedMemory = _Mapped(name=handle["name"], track=False)
    else:  # pragma: no cover - older Pythons register the block with the parent's tracker
        memory = _Mapped(name=handle["name"])
    assert memory.buf is not None
    return memory, _views(memory.buf, handle["layout"], writable)


def federation_arrays(federation: Federation) -> dict[str, np.ndarray[Any, Any]]:
    """The arrays a worker needs of a federation, by name (see :func:`federation_from`)."""
    return {
        "x": federation.x,
        "y": federation.y,
        "offsets": federation.offsets,
        "train_counts": federation.train_counts,
        "central_x": federation.central_test.x,
        "central_y": federation.central_test.y,
    }


def federation_from(info: DatasetInfo, arrays: Mapping[str, np.ndarray[Any, Any]]) -> Federation:
    """A worker's federation from :func:`federation_arrays`' arrays (views of the parent's)."""
    central = Split(arrays["central_x"], arrays["central_y"])
    return Federation(info, arrays["x"], arrays["y"], arrays["offsets"], arrays["train_counts"], central)


@dataclass(frozen=True)
class SharedData:
    """Where a worker finds named arrays: the shared files it is passed as it starts, and
    each array's place in them (:func:`sheaf.data.shared.map_arrays` maps them).

    Attributes:
        files: the files, passed to a worker as descriptors.
        slots: each array's file, offset, dtype, shape and strides.
        copies: arrays this process had to copy into shared files (kept alive with it).
    """

    files: list[InheritedFile]
    slots: list[SharedSlot]
    copies: list[np.ndarray[Any, Any]]


def share_arrays(arrays: Mapping[str, np.ndarray[Any, Any]]) -> SharedData:
    """Name where each array lies in shared files, copying into one only an array that is not in any.

    Raises:
        BackendError: if this platform has no shared files to put an array in.
    """
    files: dict[int, int] = {}  # descriptor -> position in the passed files
    passed: list[InheritedFile] = []
    slots: list[SharedSlot] = []
    copies: list[np.ndarray[Any, Any]] = []
    for name, array in arrays.items():
        where = file_of(array)
        if where is None:
            array = shared_copy(array, min_bytes=0)
            copies.append(array)
            where = file_of(array)
            if where is None:  # pragma: no cover - platforms without shared files
                raise BackendError(
                    "the pool backend needs shared memory files (memfd or /dev/shm), which this system lacks"
                )
        fd, size, offset = where
        if fd not in files:
            files[fd] = len(passed)
            passed.append(InheritedFile(fd, size))
        slots.append(SharedSlot(name, files[fd], offset, array.dtype.str, array.shape, array.strides))
    return SharedData(passed, slots, copies)
