"""The primitives: masks are AES-256-CTR's keystream, sealed shares resist tampering."""

from __future__ import annotations

import numpy as np
import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from hypothesis import given, settings
from hypothesis import strategies as st

from sheaf.core.errors import SecAggError
from sheaf.secagg.crypto import (
    _keystream_into,
    add_mask,
    agree,
    derive_key,
    expand_mask,
    generate_keypair,
    keystream,
    open_sealed,
    seal,
)


@pytest.mark.parametrize("bits", [8, 17, 32])
def test_mask_expansion_is_the_ciphers_keystream_for_that_key_and_nonce(bits: int) -> None:
    seed = bytes(range(32))
    mask = expand_mask(seed, 1000, bits=bits)
    # The reference, built independently of counter mode: AES-256 (ECB, one block at a time)
    # of the counter blocks 0, 1, 2, ... as 128-bit big-endian integers.
    blocks = b"".join(i.to_bytes(16, "big") for i in range(250))
    stream = Cipher(algorithms.AES(seed), modes.ECB()).encryptor().update(blocks)
    expected = np.frombuffer(stream, "<u4") & np.uint32((1 << bits) - 1 if bits < 32 else 0xFFFFFFFF)
    assert np.array_equal(mask, expected)
    assert keystream(seed, 4000) == stream


def test_masks_added_in_place_are_the_expanded_masks() -> None:
    seed = bytes(range(1, 33))
    start = np.arange(5000, dtype=np.uint32) * np.uint32(797_003)
    added, taken = start.copy(), start.copy()
    add_mask(added, seed)
    add_mask(taken, seed, subtract=True)
    assert np.array_equal(added, start + expand_mask(seed, 5000, bits=32))
    assert np.array_equal(taken, start - expand_mask(seed, 5000, bits=32))


def test_mask_expansion_is_not_a_seeded_numpy_generator() -> None:
    # Flower's issue #7522: masks from np.random with a 32-bit seed. Ours depend on all 256
    # bits of the seed (flip the last bit: another mask) and on nothing else.
    seed = bytes(32)
    flipped = bytes(31) + b"\x01"
    assert not np.array_equal(expand_mask(seed, 64, bits=32), expand_mask(flipped, 64, bits=32))
    assert np.array_equal(expand_mask(seed, 64, bits=32), expand_mask(bytes(32), 64, bits=32))
    for candidate in range(256):
        generated = np.random.default_rng(candidate).integers(0, 2**32, 64, dtype=np.uint32)
        assert not np.array_equal(generated, expand_mask(seed, 64, bits=32))


def test_mask_seeds_must_be_full_strength() -> None:
    with pytest.raises(SecAggError, match="32 bytes"):
        expand_mask(b"\x01\x02\x03\x04", 8, bits=32)


def test_sealed_shares_open_only_with_the_pair_key_and_the_same_associated_data() -> None:
    a_private, a_public = generate_keypair()
    b_private, b_public = generate_keypair()
    c_private, _ = generate_keypair()
    key = derive_key(agree(a_private, b_public), b"share-encryption", b"instance")
    sealed = seal(key, b"secret share", b"1->2")
    assert open_sealed(derive_key(agree(b_private, a_public), b"share-encryption", b"instance"), sealed, b"1->2") == (
        b"secret share"
    )
    with pytest.raises(SecAggError, match="authentication"):
        open_sealed(derive_key(agree(c_private, a_public), b"share-encryption", b"instance"), sealed, b"1->2")
    with pytest.raises(SecAggError, match="authentication"):
        open_sealed(key, sealed, b"1->3")
    tampered = sealed[:-1] + bytes([sealed[-1] ^ 1])
    with pytest.raises(SecAggError, match="authentication"):
        open_sealed(key, tampered, b"1->2")


def test_keys_for_other_purposes_or_instances_differ() -> None:
    shared = agree(generate_keypair()[0], generate_keypair()[1])
    keys = {derive_key(shared, p, c) for p in (b"pairwise-mask", b"share-encryption") for c in (b"i1", b"i2")}
    assert len(keys) == 4


def test_a_low_order_public_key_is_refused() -> None:
    with pytest.raises(SecAggError, match="key agreement"):
        agree(generate_keypair()[0], bytes(32))


def _counter_blocks(seed: bytes, count: int) -> bytes:
    """AES-256 (ECB, block by block) of the counter blocks 0, 1, 2, ...: the reference."""
    blocks = b"".join(i.to_bytes(16, "big") for i in range(-(-count // 16)))
    return Cipher(algorithms.AES(seed), modes.ECB()).encryptor().update(blocks)[:count]


@settings(max_examples=40, deadline=None)
@given(seed=st.binary(min_size=32, max_size=32), count=st.integers(0, 3000) | st.integers(65_000, 70_000))
def test_both_keystream_paths_are_counter_modes_keystream(seed: bytes, count: int) -> None:
    # The long-stream path takes blocks 2, 3, ... from GCM under the zero nonce: it must be
    # counter mode's keystream byte for byte, at every length (block boundaries included).
    reference = _counter_blocks(seed, count)
    for through_gcm in (False, True):
        out = bytearray(count + 64)
        _keystream_into(seed, count, out, through_gcm=through_gcm)
        assert bytes(out[:count]) == reference
    assert keystream(seed, count) == reference


def test_a_long_mask_is_the_same_through_either_path() -> None:
    seed = bytes(range(7, 39))
    length = 1 << 17  # 512 KiB of keystream: past the threshold of the GCM path
    expected = np.frombuffer(_counter_blocks(seed, 4 * length), "<u4")
    start = np.arange(length, dtype=np.uint32) * np.uint32(2_654_435_761)
    total = start.copy()
    add_mask(total, seed)
    assert np.array_equal(total, start + expected)
    add_mask(total, seed, subtract=True)
    assert np.array_equal(total, start)
    assert np.array_equal(expand_mask(seed, length, bits=32), expected)
