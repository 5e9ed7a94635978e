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
        ("float32", (-1,), b"", "none negative"),
    ],
)
def test_bad_records_are_refused(dtype: str, shape: tuple[int, ...], data: bytes, message: str) -> None:
    with pytest.raises(SheafError, match=message):
        array_from_record(dtype, shape, data)


def test_object_arrays_cannot_be_encoded() -> None:
    with pytest.raises(SheafError, match="cannot encode"):
        array_to_record(np.array([object()]))


@pytest.mark.parametrize(
    ("shape", "data", "match"),
    [
        ((0, 2**62), b"", "too big"),  # no elements, yet more than NumPy can index: ValueError before
        ((2**62, 4), b"", "needs 73786976294838206464 bytes, got 0"),  # int64 wrapped this product to 0
        ((2**31, 2**31, 4), b"", "needs"),
        ((0,) * 33, b"", "at most 32 dimensions"),
        ((2**70,), b"", "needs"),  # past int64: OverflowError before
        ((1.5,), b"\0" * 4, "not a sequence of whole numbers"),
        (("3",), b"\0" * 12, "not a sequence of whole numbers"),  # int("3") once took it
        (None, b"", "not a sequence of whole numbers"),
    ],
)
def test_shapes_that_cannot_be_an_array_are_refused_with_sheafs_own_error(
    shape: object, data: bytes, match: str
) -> None:
    with pytest.raises(SheafError, match=match):
        array_from_record("float32", shape, data)  # type: ignore[arg-type]


def test_zero_size_shapes_that_numpy_can_hold_decode() -> None:
    assert array_from_record("float32", (0, 3), b"").shape == (0, 3)
