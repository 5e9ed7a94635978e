from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from sheaf.core.errors import SheafError
from sheaf.core.tensor import array_from_record, array_to_record

dtypes = st.sampled_from(["float16", "float32", "float64", "int32", "int64", "uint8", "bool"])


@given(st.data())
def test_arrays_round_trip_exactly(data: st.DataObject) -> None:
    dtype = data.draw(dtypes)
    array = data.draw(hnp.arrays(dtype, hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=5)))
    back = array_from_record(*array_to_record(array))
    assert back.dtype == array.dtype
    assert back.shape == array.shape
    np.testing.assert_array_equal(back, array)


def test_big_endian_input_is_stored_little_endian() -> None:
    array = np.arange(4, dtype=">f4")
    dtype, shape, data = array_to_record(array)
    assert data == np.arange(4, dtype="<f4").tobytes()
    np.testing.assert_array_equal(array_from_record(dtype, shape, data), np.arange(4))


@pytest.mark.parametrize(
    ("dtype", "shape", "data", "message"),
    [
        ("object", (1,), b"x" * 8, "refusing array of dtype 'object'"),
        ("float32", (2,), b"x" * 4, "needs 8 bytes, got 4"),
        ("float32", (-1,), b"", "negative dimension"),
    ],
)
def test_bad_records_are_refused(dtype: str, shape: tuple[int, ...], data: bytes, message: str) -> None:
    with pytest.raises(SheafError, match=message):
        array_from_record(dtype, shape, data)


def test_object_arrays_cannot_be_encoded() -> None:
    with pytest.raises(SheafError, match="cannot encode"):
        array_to_record(np.array([object()]))
