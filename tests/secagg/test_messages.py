"""Every message survives its bytes; nothing but a well-formed message decodes."""

from __future__ import annotations

import contextlib
import struct

import numpy as np
import pytest

from sheaf.core.errors import SecAggError
from sheaf.secagg.messages import (
    AdvertiseKeys,
    ConsistencyRequest,
    ConsistencySignature,
    EncryptedShare,
    ForwardedShares,
    MaskedInput,
    PeerKeys,
    ShareKeys,
    UnmaskRequest,
    UnmaskShares,
    decode_message,
    encode_message,
)

INSTANCE = bytes(range(16))
KEYS = AdvertiseKeys(INSTANCE, 3, b"a" * 32, b"b" * 32, b"c" * 32)
SHARE = EncryptedShare(3, 5, b"sealed" * 30)
SIGNED = ConsistencySignature(INSTANCE, 5, b"s" * 64)
MESSAGES = [
    KEYS,
    PeerKeys(INSTANCE, (KEYS, AdvertiseKeys(INSTANCE, 9, b"d" * 32, b"e" * 32, b"f" * 32))),
    ShareKeys(INSTANCE, 3, (SHARE, EncryptedShare(3, 7, b"x"))),
    ForwardedShares(INSTANCE, (SHARE,)),
    MaskedInput(INSTANCE, 3, 32, np.array([0, 1, 2**32 - 1], np.uint32)),
    MaskedInput(INSTANCE, 3, 20, np.array([0, 1, 2**20 - 1, 77], np.uint32)),
    MaskedInput(INSTANCE, 3, 8, np.zeros(0, np.uint32)),
    ConsistencyRequest(INSTANCE, (1, 3, 5)),
    SIGNED,
    UnmaskRequest(INSTANCE, (1, 3, 5), (SIGNED,)),
    UnmaskShares(INSTANCE, 3, ((1, b"\x01" * 66),), ((5, b"\x02" * 66), (7, b"\x03" * 66))),
]


@pytest.mark.parametrize("message", MESSAGES, ids=lambda m: type(m).__name__)
def test_every_message_round_trips_through_its_bytes(message: object) -> None:
    assert decode_message(encode_message(message)) == message  # type: ignore[arg-type]


def test_a_masked_input_is_packed_in_whole_bytes_of_its_ring() -> None:
    vector = np.arange(1000, dtype=np.uint32)
    sizes = {bits: len(encode_message(MaskedInput(INSTANCE, 1, bits, vector))) for bits in (16, 24, 32)}
    assert sizes[24] - sizes[16] == 1000 and sizes[32] - sizes[24] == 1000


@pytest.mark.parametrize("message", MESSAGES, ids=lambda m: type(m).__name__)
def test_truncated_or_extended_bytes_are_refused(message: object) -> None:
    data = encode_message(message)  # type: ignore[arg-type]
    for cut in range(len(data)):
        with pytest.raises(SecAggError):
            decode_message(data[:cut])
    with pytest.raises(SecAggError, match="trailing"):
        decode_message(data + b"\x00")


def test_random_mutations_raise_only_secagg_errors() -> None:
    rng = np.random.default_rng(0)
    for message in MESSAGES:
        data = bytearray(encode_message(message))  # type: ignore[arg-type]
        for _ in range(300):
            mutated = bytearray(data)
            for position in rng.integers(0, len(mutated), size=int(rng.integers(1, 4))):
                mutated[position] = int(rng.integers(0, 256))
            with contextlib.suppress(SecAggError):
                decode_message(bytes(mutated))


def test_a_declared_length_beyond_the_cap_is_refused_before_allocating() -> None:
    data = b"SA\x02\x02" + (16).to_bytes(4, "big") + INSTANCE + (2**31).to_bytes(4, "big")
    with pytest.raises(SecAggError, match="more than"):
        decode_message(data)


def test_a_message_of_the_chacha20_version_is_refused() -> None:
    # Version 1 expanded masks with ChaCha20: summed with AES-CTR masks they would not
    # cancel, so the old version is refused rather than aggregated into a wrong sum.
    current = encode_message(ConsistencySignature(INSTANCE, 0, bytes(64)))
    assert current[:3] == b"SA\x02"
    with pytest.raises(SecAggError, match="not a secure-aggregation message of this version"):
        decode_message(b"SA\x01" + current[3:])


def _reference_bytes(message: object) -> bytes:
    """The wire layout written out field by field with ``struct``, as the module docstring
    states it (big-endian u64 ids, u32 counts and lengths): the faster encoder and decoder
    must keep exactly these bytes, or deployed peers of two releases would not understand
    each other."""
    u64, u32 = (lambda v: struct.pack(">Q", v)), (lambda v: struct.pack(">I", v))

    def blob(value: bytes) -> bytes:
        return u32(len(value)) + value

    def shares(items: tuple[EncryptedShare, ...]) -> bytes:
        return u32(len(items)) + b"".join(u64(s.sender) + u64(s.recipient) + blob(s.ciphertext) for s in items)

    def pairs(items: tuple[tuple[int, bytes], ...]) -> bytes:
        return u32(len(items)) + b"".join(u64(peer) + blob(share) for peer, share in items)

    def keys(m: AdvertiseKeys) -> bytes:
        return blob(m.instance) + u64(m.client) + blob(m.cipher_key) + blob(m.mask_key) + blob(m.signing_key)

    if isinstance(message, AdvertiseKeys):
        return b"SA\x02\x01" + keys(message)
    if isinstance(message, PeerKeys):
        return b"SA\x02\x02" + blob(message.instance) + u32(len(message.keys)) + b"".join(map(keys, message.keys))
    if isinstance(message, ShareKeys):
        return b"SA\x02\x03" + blob(message.instance) + u64(message.client) + shares(message.shares)
    if isinstance(message, ForwardedShares):
        return b"SA\x02\x04" + blob(message.instance) + shares(message.shares)
    if isinstance(message, MaskedInput):
        assert message.bits == 32
        body = u64(32) + u32(message.vector.size) + message.vector.astype("<u4").tobytes()
        return b"SA\x02\x05" + blob(message.instance) + u64(message.client) + body
    assert isinstance(message, UnmaskShares)
    body = u64(message.client) + pairs(message.seed_shares) + pairs(message.key_shares)
    return b"SA\x02\x09" + blob(message.instance) + body


ODD_SIZES = AdvertiseKeys(bytes(5), 2, b"k" * 31, b"m" * 33, b"s" * 32)  # not the one-call layout's sizes


@pytest.mark.parametrize(
    "message",
    [
        MESSAGES[0],
        MESSAGES[1],
        ODD_SIZES,
        PeerKeys(bytes(5), (ODD_SIZES, KEYS)),
        MESSAGES[2],
        MESSAGES[3],
        MESSAGES[4],
        MESSAGES[-1],
    ],
    ids=lambda m: type(m).__name__,
)
def test_the_wire_bytes_are_the_documented_layout(message: object) -> None:
    assert encode_message(message) == _reference_bytes(message)  # type: ignore[arg-type]


def test_a_sealed_share_longer_than_the_cap_is_refused_before_reading_it() -> None:
    # sender, recipient, then a ciphertext length past the 64 KiB cap: refused on the header
    data = b"SA\x02\x04" + (16).to_bytes(4, "big") + INSTANCE + (1).to_bytes(4, "big")
    data += (3).to_bytes(8, "big") + (5).to_bytes(8, "big") + (2**16 + 1).to_bytes(4, "big")
    with pytest.raises(SecAggError, match="more than"):
        decode_message(data + bytes(2**16 + 1))
