from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from threadpoolctl import ThreadpoolController

from sheaf.core.errors import SheafError
from sheaf.core.params import Params, sum_of_squares
from tests.helpers import params, params_like, params_structures


@given(params())
def test_flatten_then_unflatten_is_identity(p: Params) -> None:
    assert p.unflatten(p.flatten()).array_equal(p)


@given(st.data())
def test_add_then_subtract_gives_back_the_original_in_float64(data: st.DataObject) -> None:
    structure = data.draw(params_structures())
    a = data.draw(params_like(structure)).astype(np.float64)
    b = data.draw(params_like(structure)).astype(np.float64)
    np.testing.assert_allclose((a + b - b).flatten(), a.flatten(), atol=1e-9)


@given(params(), st.floats(-4, 4))
def test_arithmetic_keeps_names_shapes_and_dtypes(p: Params, factor: float) -> None:
    for result in (p + p, p - p, p * factor, factor * p, -p, p.zeros_like(), p.copy()):
        assert result.same_structure(p)


def test_l2_norm_is_the_norm_of_all_values_together() -> None:
    p = Params({"a": np.array([3.0], np.float32), "b": np.array([[4.0]], np.float32)})
    assert p.l2_norm() == pytest.approx(5.0)


def test_arrays_are_frozen_so_nobody_mutates_shared_params() -> None:
    p = Params({"w": np.zeros(3, np.float32)})
    with pytest.raises(ValueError, match="read-only"):
        p["w"][0] = 1.0


def test_integer_arrays_are_refused_with_advice() -> None:
    with pytest.raises(SheafError, match="floating-point.*astype"):
        Params({"w": np.arange(3)})


def test_combining_params_with_different_names_is_refused() -> None:
    with pytest.raises(SheafError, match="different names"):
        Params({"a": np.zeros(1)}) + Params({"b": np.zeros(1)})


def test_unflatten_checks_the_length() -> None:
    with pytest.raises(SheafError, match="cannot unflatten"):
        Params({"w": np.zeros(3)}).unflatten(np.zeros(4))


def test_all_finite_detects_nan_and_inf() -> None:
    assert Params({"w": np.zeros(2)}).all_finite()
    assert not Params({"w": np.array([0.0, np.nan])}).all_finite()
    assert not Params({"w": np.array([np.inf])}).all_finite()


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 60_000), st.integers(0, 2**32 - 1))
def test_a_norm_does_not_depend_on_how_many_threads_blas_has(size: int, seed: int) -> None:
    # Arrange: float32 params, as models have; OpenBLAS splits a dot of > 10,000 elements
    # between its threads, and the split changes the rounding.
    values = np.random.default_rng(seed).standard_normal(size).astype(np.float32)
    model = Params({"w": values})
    wide = values.astype(np.float64)
    blas = ThreadpoolController()
    # Act
    norms = []
    for threads in (1, 2, 3, 8):
        with blas.limit(limits=threads, user_api="blas"):
            norms.append((model.l2_norm(), sum_of_squares(wide)))
    # Assert: the same bits each time, and those of two halves on one thread each
    assert len(set(norms)) == 1
    half = (size + 1) // 2 if size > 10_000 else size
    with blas.limit(limits=1, user_api="blas"):
        expected = float(np.dot(wide[:half], wide[:half])) + float(np.dot(wide[half:], wide[half:]))
    assert norms[0][1] == expected
