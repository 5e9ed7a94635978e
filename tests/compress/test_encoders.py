"""Every encoder: its round trip within its stated bound, its layout, what it refuses."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from sheaf.compress import Encoder, TopKEncoder, build_encoder, from_bfloat16, to_bfloat16
from sheaf.core.encoded import Encoded, layout_bytes
from sheaf.quantize import SeededBits

#: Every encoder a config can name, with the settings it takes.
ENCODERS = {
    "fp16": {},
    "bf16": {},
    "q8": {},
    "q8+rotation": {"rotate": True},
    "q4": {},
    "q4+rotation": {"rotate": True},
    "q2": {},
    "q2+rotation": {"rotate": True},
    "topk": {"k": 0.1},
    "topk-indices": {"k": 0.02},  # below 1/32: positions travel as indices, not a bitmap
}


def encoder(name: str, length: int) -> Encoder:
    return build_encoder(name.split("+")[0].split("-")[0], length, **ENCODERS[name])  # type: ignore[arg-type]


# fp16 is bounded only within its range; the others take any float64 a model holds.
def vectors(limit: float) -> st.SearchStrategy[np.ndarray]:
    elements = st.floats(-limit, limit, allow_nan=False, allow_infinity=False, allow_subnormal=True)
    return st.integers(1, 600).flatmap(lambda n: hnp.arrays(np.float64, n, elements=elements))


@pytest.mark.parametrize("name", list(ENCODERS))
@settings(max_examples=40, deadline=None)
@given(data=st.data(), seed=st.integers(0, 2**40))
def test_every_encoder_round_trips_within_its_stated_bound(name: str, data: st.DataObject, seed: int) -> None:
    x = data.draw(vectors(65504.0 if name == "fp16" else 1e30))
    coder = encoder(name, x.size)

    sent = coder.encode(x, seed=seed, bits=SeededBits(np.random.default_rng(seed)))
    back = coder.decode(sent, seed=seed)

    assert sent.layout == coder.layout and sent.nbytes == layout_bytes(coder.layout)
    assert back.shape == x.shape and np.isfinite(back).all()
    assert np.linalg.norm(back - x) <= coder.error_bound(x, sent)


@pytest.mark.parametrize("name", list(ENCODERS))
@settings(max_examples=20, deadline=None)
@given(x=vectors(1e3), factor=st.floats(0.01, 1.0))
def test_scaling_an_encoding_scales_its_decoding(name: str, x: np.ndarray, factor: float) -> None:
    coder = encoder(name, x.size)
    sent = coder.encode(x, seed=1, bits=SeededBits(np.random.default_rng(1)))

    scaled = coder.decode(coder.scaled(sent, factor), seed=1)

    # Within the encoder's own rounding of the scaled values (bf16's 2**-8 is the widest).
    expected = factor * coder.decode(sent, seed=1)
    assert np.linalg.norm(scaled - expected) <= 2**-8 * np.linalg.norm(expected) + 1e-30


def test_sizes_are_those_the_targets_need_on_the_fashion_mnist_cnn() -> None:
    plain = 4 * 28938  # float32 update of the CNN
    ratios = {name: plain / layout_bytes(encoder(name, 28938).layout) for name in ENCODERS}
    assert ratios["fp16"] == ratios["bf16"] == 2
    assert ratios["q8"] >= 3.9 and ratios["q4+rotation"] >= 7.5 and ratios["topk"] >= 5


def test_top_k_sends_the_largest_coordinates_and_refuses_a_forged_bitmap() -> None:
    topk = TopKEncoder(20, 3)
    x = np.arange(20.0) - 10.0  # -10 is the largest, then 9, then -9 and 8 (ties by position)
    sent = topk.encode(x, seed=0, bits=None)
    assert np.flatnonzero(topk.decode(sent, seed=0)).tolist() == [0, 1, 19]

    forged = Encoded({"positions": np.full(3, 255, np.uint8), "values": sent["values"]})
    with pytest.raises(ValueError, match="past the vector's end|marks"):
        topk.decode(forged, seed=0)
    one_more = np.array(sent["positions"])
    one_more[1] |= 1
    with pytest.raises(ValueError, match="marks 4 positions"):
        topk.decode(Encoded({"positions": one_more, "values": sent["values"]}), seed=0)


def test_top_k_indices_must_be_distinct_and_increasing() -> None:
    topk = TopKEncoder(1000, 3)  # 3 indices (12 bytes) beat a 125-byte bitmap
    values = np.ones(3, np.float32)
    with pytest.raises(ValueError, match="increasing"):
        topk.decode(Encoded({"positions": np.array([5, 5, 9], np.uint32), "values": values}), seed=0)
    with pytest.raises(ValueError, match="increasing"):
        topk.decode(Encoded({"positions": np.array([5, 7, 1000], np.uint32), "values": values}), seed=0)


def test_half_precision_refuses_infinities_and_bfloat16_rounds_to_nearest_even() -> None:
    with pytest.raises(ValueError, match="not finite"):
        build_encoder("fp16", 2).decode(Encoded({"values": np.array([1, np.inf], np.float16)}), seed=0)
    with pytest.raises(ValueError, match="not finite"):
        build_encoder("bf16", 1).decode(Encoded({"values": np.array([0x7F80], np.int16)}), seed=0)
    # 1 + 2**-8 is halfway between two bfloat16s: it rounds to the even one, 1.
    assert from_bfloat16(to_bfloat16(np.array([1 + 2**-8, 1 + 3 * 2**-8]))).tolist() == [1.0, 1 + 2**-6]


def test_an_unknown_encoder_is_refused_with_the_known_ones() -> None:
    with pytest.raises(ValueError, match="fp16, bf16, q8, q4, q2, topk"):
        build_encoder("q3", 10)
