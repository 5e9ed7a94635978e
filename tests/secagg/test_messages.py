"""Every message survives its bytes; nothing but a well-formed message decodes."""

from __future__ import annotations

import contextlib

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
