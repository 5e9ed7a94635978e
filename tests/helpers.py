"""Shared Hypothesis strategies and small builders for the tests."""

from __future__ import annotations

from typing import Any

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from sheaf.core.params import Params
from sheaf.core.update import Update

FLOAT_DTYPES = st.sampled_from([np.float32, np.float64])

# Moderate magnitudes keep float rounding far from the tolerance of the tests.
finite_floats = st.floats(min_value=-1e3, max_value=1e3, allow_nan=False, allow_infinity=False, width=32)


@st.composite
def params_structures(draw: st.DrawFn, max_tensors: int = 3) -> dict[str, tuple[tuple[int, ...], Any]]:
    """Names -> (shape, dtype) of a small model."""
    count = draw(st.integers(1, max_tensors))
    names = draw(st.lists(st.text("abcdefgh.", min_size=1, max_size=6), min_size=count, max_size=count, unique=True))
    return {name: (draw(hnp.array_shapes(min_dims=0, max_dims=3, max_side=4)), draw(FLOAT_DTYPES)) for name in names}


def params_like(structure: dict[str, tuple[tuple[int, ...], Any]]) -> st.SearchStrategy[Params]:
    """Params of the given structure with finite values."""
    arrays = {name: hnp.arrays(dtype, shape, elements=finite_floats) for name, (shape, dtype) in structure.items()}
    return st.fixed_dictionaries(arrays).map(lambda d: Params({name: d[name] for name in structure}))


@st.composite
def params(draw: st.DrawFn) -> Params:
    """Any small Params."""
    return draw(params_like(draw(params_structures())))


@st.composite
def rounds_of_updates(draw: st.DrawFn, min_clients: int = 1, max_clients: int = 6) -> tuple[Params, list[Update]]:
    """Global params and a list of updates from distinct clients with the same structure."""
    structure = draw(params_structures())
    start = draw(params_like(structure))
    n = draw(st.integers(min_clients, max_clients))
    ids = draw(st.lists(st.integers(0, 1000), min_size=n, max_size=n, unique=True))
    updates = [Update(cid, draw(params_like(structure)), draw(st.integers(1, 50))) for cid in ids]
    return start, updates


def constant_params(like: Params, value: float) -> Params:
    """Params shaped like ``like`` filled with ``value``."""
    return like.map(lambda a: np.full_like(a, value))
