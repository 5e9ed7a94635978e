"""Keyed random streams: a deployed run's secret, and cryptographically secure streams from it.

A simulation draws every random choice from streams of its public seed
(:mod:`sheaf.core.rng`), so anyone who knows the seed can replay them. A deployed server
must make some choices nobody else can predict — which clients train in a round (else
amplification by sampling fails against the participants), the noise it adds to an
aggregate (else it can be subtracted) — and yet make the same choice again after a
restart (a resumed run samples the same cohorts; a round redone after a crash must
release the same noise, not a second, fresh draw). Both come from one **run secret**: 32
bytes from the operating system's CSPRNG (:func:`new_secret`), created with the run, kept
in its run store, never sent.

Each use gets its own stream: a ChaCha20 key stream keyed by
``HKDF-SHA256(secret, info = purpose and round)`` (:func:`keyed_stream`). Without the
secret the stream is indistinguishable from random (ChaCha20 is a PRF; HKDF separates
the purposes and rounds), so what a client sees — its own participation — says nothing
about anyone else's; with the secret it is exactly reproducible.

Example:
    >>> secret = bytes(32)
    >>> a = keyed_stream(secret, "cohort", round=3).uniform(4)
    >>> b = keyed_stream(secret, "cohort", round=3).uniform(4)
    >>> bool((a == b).all()), bool((a != keyed_stream(secret, "cohort", round=4).uniform(4)).any())
    (True, True)

References:
    Bernstein. ChaCha, a variant of Salsa20. 2008; RFC 8439 (ChaCha20). Krawczyk.
    Cryptographic Extraction and Key Derivation: The HKDF Scheme. CRYPTO 2010; RFC 5869.
"""

from __future__ import annotations

import os

import numpy as np
import numpy.typing as npt
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from sheaf.core.errors import ConfigError

__all__ = ["SECRET_BYTES", "KeyedStream", "keyed_stream", "new_secret"]

#: The length of a run secret (a ChaCha20 key's).
SECRET_BYTES = 32
_TWO_TO_MINUS_53 = 1.0 / (1 << 53)


def new_secret() -> bytes:
    """A fresh run secret from the operating system's CSPRNG (``os.urandom``)."""
    return os.urandom(SECRET_BYTES)


class KeyedStream:
    """A ChaCha20 key stream: uniform bytes, and numbers made of them, in order.

    Args:
        key: 32 bytes (derive it with :func:`keyed_stream`, not by hand).
    """

    def __init__(self, key: bytes) -> None:
        if len(key) != SECRET_BYTES:
            raise ConfigError(f"a keyed stream needs a {SECRET_BYTES}-byte key, got {len(key)} bytes")
        # The nonce is fixed: every key is used for one stream only.
        self._cipher = Cipher(algorithms.ChaCha20(key, bytes(16)), mode=None).encryptor()

    def bytes(self, count: int) -> bytes:
        """The next ``count`` bytes of the stream."""
        return self._cipher.update(bytes(count))

    def uint64(self, count: int) -> npt.NDArray[np.uint64]:
        """The next ``count`` uniform 64-bit integers."""
        return np.frombuffer(self.bytes(8 * count), dtype="<u8").astype(np.uint64)

    def uniform(self, count: int) -> npt.NDArray[np.float64]:
        """The next ``count`` uniform numbers in [0, 1), with 53 random bits each."""
        return (self.uint64(count) >> np.uint64(11)).astype(np.float64) * _TWO_TO_MINUS_53


def keyed_stream(secret: bytes, purpose: str, *, round: int) -> KeyedStream:
    """The stream of ``secret`` for one purpose (``cohort``, ``noise``, ...) and one round.

    Raises:
        ConfigError: if the secret is not :data:`SECRET_BYTES` long.
    """
    if len(secret) != SECRET_BYTES:
        raise ConfigError(f"a run secret is {SECRET_BYTES} bytes, got {len(secret)}")
    info = b"sheaf/" + purpose.encode() + b"/" + round.to_bytes(8, "big", signed=False)
    key = HKDF(algorithm=hashes.SHA256(), length=SECRET_BYTES, salt=None, info=info).derive(secret)
    return KeyedStream(key)
