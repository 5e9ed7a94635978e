from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pytest
from hypothesis import given

from sheaf.core.errors import SheafError
from sheaf.core.params import Params
from sheaf.core.tree import decode_tree, encode_tree
from tests.helpers import params


class Moments(NamedTuple):
    step: int
    m: Params
    v: Params


@given(params())
def test_a_namedtuple_state_round_trips_with_its_template(p: Params) -> None:
    state = (Moments(3, p, p * 2.0), (), {"clients": {7: p}, "name": "x", "ratio": 0.5, "flag": True, "none": None})
    template = (Moments(0, p.zeros_like(), p.zeros_like()), (), {})
    structure, arrays = encode_tree(state)
    restored = decode_tree(structure, arrays, template)
    assert isinstance(restored[0], Moments)
    assert restored[0].step == 3
    assert restored[0].v.array_equal(p * 2.0)
    assert restored[2]["clients"][7].array_equal(p)
    assert restored[2]["name"] == "x"
    assert restored[2]["flag"] is True
    assert restored[2]["none"] is None


def test_without_a_template_namedtuples_come_back_as_tuples() -> None:
    structure, arrays = encode_tree(Moments(1, Params({}), Params({})))
    assert type(decode_tree(structure, arrays)) is tuple


def test_unsupported_values_are_refused() -> None:
    with pytest.raises(SheafError, match="cannot store state of type object"):
        encode_tree({"x": object()})
    with pytest.raises(SheafError, match="keys must be str or int"):
        encode_tree({1.5: 1})


def test_malformed_structures_are_errors_not_crashes() -> None:
    with pytest.raises(SheafError, match="not valid JSON"):
        decode_tree("{", [])
    with pytest.raises(SheafError, match="missing"):
        decode_tree('{"a": 3}', [np.zeros(1)])
    with pytest.raises(SheafError, match="malformed"):
        decode_tree('{"zz": 1}', [])
