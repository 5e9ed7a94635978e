"""Arrays worker processes map instead of copying: a federation's data lives in them from the start.

A simulation's data is built once, by the run's own process, and read by every worker of
a pool. Built in ordinary memory, it would have to be copied into shared memory for the
workers — a second copy of all of it (0.6 GB at a million clients). So the federation
builders put their large arrays here from the start: each in its own anonymous shared
file (a ``memfd``; an unlinked file in ``/dev/shm`` or the temporary folder where there is
none) mapped into this process. A pool passes the file's descriptor to each worker as it
starts (:class:`InheritedFile`), and the worker maps the same pages copy-on-write
(:func:`map_arrays`): it reads the parent's memory, and a task that writes into its data
changes only its own view. A file goes away with its last mapping and descriptor, so
nothing is left behind, even by a crash. Ray's actors on the same machine open the same
files through ``/proc/<pid>/fd`` (:func:`open_files_of`).

Arrays under :data:`MIN_BYTES` stay in ordinary memory (a pool copies those); so does
everything where the platform has no shared files.

Example:
    >>> import numpy as np
    >>> a = shared_copy(np.arange(6.0).reshape(2, 3), min_bytes=0)
    >>> a.tolist(), file_of(a) is not None, file_of(np.zeros(3)) is None
    ([[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]], True, True)
"""

from __future__ import annotations

import contextlib
import mmap
import os
import tempfile
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = [
    "MIN_BYTES",
    "InheritedFile",
    "SharedSlot",
    "file_of",
    "map_arrays",
    "open_files_of",
    "shared_copy",
    "shared_empty",
    "take_rows",
]

#: Arrays smaller than this stay in ordinary memory (a pool copies them; it costs nothing).
MIN_BYTES = 1 << 20

_ROWS_PER_COPY = 1 << 16  # rows gathered at a time by take_rows (bounded temporaries)


@dataclass(frozen=True)
class _File:
    fd: int
    size: int
    address: int  # where this process maps it


_FILES: dict[int, _File] = {}  # id(mapping) -> its file, while the mapping lives


def _forget(key: int, fd: int) -> None:
    _FILES.pop(key, None)
    with contextlib.suppress(OSError):
        os.close(fd)


def _new_file(size: int) -> int | None:
    """A descriptor of a new anonymous shared file of ``size`` bytes (None where there is none)."""
    try:
        if hasattr(os, "memfd_create"):
            fd = os.memfd_create("sheaf-data", os.MFD_CLOEXEC)
        else:  # pragma: no cover - platforms without memfd (macOS)
            folder = "/dev/shm" if os.path.isdir("/dev/shm") else None
            fd, path = tempfile.mkstemp(prefix="sheaf-data-", dir=folder)
            os.unlink(path)
        os.ftruncate(fd, size)
    except (OSError, AttributeError):  # pragma: no cover - no shared files here
        return None
    return fd


def _c_strides(shape: tuple[int, ...], itemsize: int) -> tuple[int, ...]:
    strides, step = [], itemsize
    for n in reversed(shape):
        strides.append(step)
        step *= max(n, 1)
    return tuple(reversed(strides))


def _layout(shape: tuple[int, ...], dtype: np.dtype[Any], strides: Sequence[int] | None) -> tuple[int, ...]:
    """``strides`` where they lay the array out as one block of its own size (C or Fortran
    order, any strides on axes of length 1), else C order's."""
    plain = _c_strides(shape, dtype.itemsize)
    if strides is None or len(strides) != len(shape):
        return plain
    probe = np.lib.stride_tricks.as_strided(np.empty(1, dtype), shape, tuple(strides))  # read for its flags only
    return tuple(int(s) for s in strides) if probe.flags.c_contiguous or probe.flags.f_contiguous else plain


def shared_empty(
    shape: tuple[int, ...],
    dtype: npt.DTypeLike,
    *,
    strides: Sequence[int] | None = None,
    min_bytes: int = MIN_BYTES,
) -> np.ndarray[Any, Any]:
    """A new uninitialised array in a shared file (ordinary memory if under ``min_bytes``).

    Args:
        shape: the array's shape.
        dtype: its dtype.
        strides: its strides, where they lay it out as one block (torch picks kernels, and
            with them its rounding, from strides, so copies keep them); default C order.
        min_bytes: smaller arrays stay in ordinary memory.
    """
    kind = np.dtype(dtype)
    layout = _layout(shape, kind, strides)
    size = int(np.prod(shape, dtype=np.int64)) * kind.itemsize
    fd = _new_file(size) if size >= max(min_bytes, 1) else None
    if fd is None:
        return np.ndarray(shape, kind, buffer=np.empty(size, np.uint8), strides=layout)
    mapping = mmap.mmap(fd, size)
    address = np.frombuffer(mapping, np.uint8, count=1).__array_interface__["data"][0]
    _FILES[id(mapping)] = _File(fd, size, address)
    weakref.finalize(mapping, _forget, id(mapping), fd)
    return np.ndarray(shape, kind, buffer=mapping, strides=layout)


def shared_copy(array: np.ndarray[Any, Any], *, min_bytes: int = MIN_BYTES) -> np.ndarray[Any, Any]:
    """A copy of ``array`` in a shared file, with its strides where they fit one block."""
    out = shared_empty(array.shape, array.dtype, strides=array.strides, min_bytes=min_bytes)
    out[...] = array
    return out


def take_rows(source: np.ndarray[Any, Any], rows: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """``source[rows]``, built in a shared file block by block, with the strides NumPy gives ``source[rows]``."""
    rows = np.asarray(rows)
    if len(rows) < 2:
        small: np.ndarray[Any, Any] = source[rows]
        return small
    layout = source[rows[:2]].strides  # NumPy's own layout for a gather (size-1 axes included)
    out = shared_empty((len(rows), *source.shape[1:]), source.dtype, strides=layout)
    for start in range(0, len(rows), _ROWS_PER_COPY):
        out[start : start + _ROWS_PER_COPY] = source[rows[start : start + _ROWS_PER_COPY]]
    return out


def file_of(array: np.ndarray[Any, Any]) -> tuple[int, int, int] | None:
    """``(descriptor, file size, byte offset of the array's first element)`` if ``array`` lies in a
    shared file made here; None otherwise."""
    base: Any = array
    while isinstance(base, np.ndarray):
        base = base.base
    if not isinstance(base, mmap.mmap) or id(base) not in _FILES:
        return None
    file = _FILES[id(base)]
    return file.fd, file.size, int(array.__array_interface__["data"][0]) - file.address


class InheritedFile:
    """A shared file's descriptor, passed to a worker process as it starts.

    Pickled while multiprocessing starts a process, it travels as a duplicated descriptor
    (``multiprocessing.reduction.DupFd``: passed over the forkserver's socket, or
    inherited), never as a path or a name.
    """

    def __init__(self, fd: int, size: int) -> None:
        self.fd = fd
        self.size = size

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        from multiprocessing import reduction

        return _inherit, (reduction.DupFd(self.fd), self.size)


def _inherit(dup: Any, size: int) -> InheritedFile:
    return InheritedFile(dup.detach(), size)


def open_files_of(pid: int, files: Sequence[tuple[int, int]]) -> list[InheritedFile]:
    """Another process's shared files ``(descriptor, size)``, opened through ``/proc/<pid>/fd``.

    For processes on the same machine that the owner did not start itself (Ray's actors):
    Linux lets a process of the same user open another's descriptors there.

    Raises:
        OSError: if they cannot be opened (another machine, another user, no ``/proc``).
    """
    return [InheritedFile(os.open(f"/proc/{pid}/fd/{fd}", os.O_RDONLY), size) for fd, size in files]


@dataclass(frozen=True)
class SharedSlot:
    """Where one named array lies: which of the passed files, its offset, dtype, shape and strides."""

    name: str
    file: int
    offset: int
    dtype: str
    shape: tuple[int, ...]
    strides: tuple[int, ...]


def map_arrays(files: Sequence[InheritedFile], slots: Sequence[SharedSlot]) -> Mapping[str, np.ndarray[Any, Any]]:
    """In a worker: map the passed files copy-on-write and view the named arrays in them.

    The views are writable, as the parent's arrays are, but a write changes only this
    process's copy of the page.
    """
    mappings = []
    for file in files:
        mappings.append(mmap.mmap(file.fd, file.size, flags=mmap.MAP_PRIVATE))
        os.close(file.fd)  # the mapping keeps the pages
    return {
        slot.name: np.ndarray(
            slot.shape, np.dtype(slot.dtype), buffer=mappings[slot.file], offset=slot.offset, strides=slot.strides
        )
        for slot in slots
    }
