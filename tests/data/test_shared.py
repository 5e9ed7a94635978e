"""Shared arrays: built once, mapped by workers without a copy, gone with their last mapping."""

from __future__ import annotations

import contextlib
import gc
import multiprocessing
import os
from typing import Any

import numpy as np
import pytest

from sheaf.core.config import DataConfig
from sheaf.data.catalog import build_federation
from sheaf.data.shared import InheritedFile, SharedSlot, file_of, map_arrays, shared_copy, shared_empty, take_rows
from sheaf.data.synthetic import synthetic_federation

pytestmark = pytest.mark.skipif(not hasattr(os, "memfd_create"), reason="shared files need memfd (Linux)")


def open_shared_files() -> int:
    count = 0
    for fd in os.listdir("/proc/self/fd"):  # the listing's own descriptor is gone when read
        with contextlib.suppress(FileNotFoundError):
            count += "sheaf-data" in os.readlink(f"/proc/self/fd/{fd}")
    return count


def test_a_file_lives_as_long_as_an_array_in_it() -> None:
    before = open_shared_files()
    array = shared_empty((1000, 300), np.float32)
    view = array[10:20]
    del array
    gc.collect()
    assert open_shared_files() > before  # the view keeps it (and the mapping its own descriptor)
    del view
    gc.collect()
    assert open_shared_files() == before


@pytest.mark.parametrize(
    "array",
    [
        np.arange(600_000, dtype=np.float32).reshape(1000, 600),
        np.asfortranarray(np.arange(600_000, dtype=np.float64).reshape(600, 1000)),
        np.arange(600_000, dtype=np.float32).reshape(1000, 600)[:, None, :],  # stride 0 on an axis of length 1
    ],
    ids=["c-order", "fortran-order", "size-1-axis"],
)
def test_copies_keep_the_values_and_the_strides(array: np.ndarray[Any, Any]) -> None:
    copy = shared_copy(array)
    assert file_of(copy) is not None
    assert copy.strides == array.strides
    assert np.array_equal(copy, array)


def test_small_arrays_stay_in_ordinary_memory() -> None:
    assert file_of(shared_empty((10,), np.int64)) is None
    assert file_of(shared_empty((10,), np.int64, min_bytes=0)) is not None


def test_take_rows_is_numpys_gather_with_its_strides() -> None:
    source = np.arange(784_000, dtype=np.float32).reshape(-1, 28, 28)[:, None]
    rows = np.random.default_rng(0).permutation(len(source))
    expected = source[rows]
    got = take_rows(source, rows)
    assert got.strides == expected.strides
    assert np.array_equal(got, expected)


def test_the_federation_builders_put_their_large_arrays_in_shared_files() -> None:
    synthetic = synthetic_federation(200_000, samples=8, features=16)
    assert all(file_of(a) is not None for a in (synthetic.x, synthetic.y, synthetic.offsets, synthetic.train_counts))
    digits = build_federation(DataConfig(dataset="digits", clients=10), seed=0)
    assert file_of(digits.x) is None  # 0.4 MB: ordinary memory


def _read(conn: Any, files: list[InheritedFile], slots: list[SharedSlot]) -> None:
    arrays = map_arrays(files, slots)
    total = float(arrays["x"].sum())
    arrays["x"][0] = -1.0  # copy-on-write: the parent's array must not change
    conn.send((total, arrays["x"].strides, os.getpid()))


def test_a_worker_maps_the_parents_pages_and_its_writes_stay_its_own() -> None:
    x = shared_copy(np.arange(1_000_000, dtype=np.float32).reshape(1000, 1000))
    fd, size, offset = file_of(x)  # type: ignore[misc]
    files, slots = [InheritedFile(fd, size)], [SharedSlot("x", 0, offset, x.dtype.str, x.shape, x.strides)]
    context = multiprocessing.get_context("forkserver")
    parent, child = context.Pipe()
    process = context.Process(target=_read, args=(child, files, slots))
    process.start()
    total, strides, pid = parent.recv()
    process.join(30)
    assert pid != os.getpid()
    assert total == float(x.sum()) and strides == x.strides
    assert x[0, 0] == 0.0
