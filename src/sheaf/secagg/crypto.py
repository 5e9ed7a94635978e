"""The cryptographic primitives of secure aggregation, all from ``cryptography`` (OpenSSL).

- **Key agreement**: X25519 (:func:`generate_keypair`, :func:`agree`), then HKDF-SHA256
  (:func:`derive_key`) with a label saying what the key is for and the protocol instance
  it belongs to, so no two uses share a key.
- **Authenticated encryption** of the Shamir shares a client sends a peer through the
  server: ChaCha20-Poly1305 with a random 96-bit nonce (:func:`seal`, :func:`open_sealed`),
  the sender, receiver and instance bound as associated data.
- **Signatures** for the consistency check: Ed25519 (:func:`sign`, :func:`verify`).
- **Mask expansion**: a 256-bit seed keys AES-256 in counter mode, whose keystream
  (initial counter block zero: every seed is fresh and used for one vector) read as
  little-endian 32-bit words and reduced mod ``2**b`` gives uniform elements of Z_{2^b}
  (:func:`expand_mask`). AES-256-CTR rather than ChaCha20 because the server expands
  thousands of these per round after dropouts, and on CPUs with AES instructions OpenSSL's
  AES-CTR is faster (``benchmarks/secagg.py --primitives`` measures both). Long keystreams
  are computed through OpenSSL's AES-GCM code under the all-zero nonce, whose counter blocks
  from the third on are counter mode's own (the first two come from counter mode; the tag is
  never computed): the same bytes, faster where GCM's code uses vector AES instructions and
  CTR's does not (timed once per process; either way tested against AES of the counter
  blocks). The seed is a full
  256-bit secret — a self-mask seed from ``os.urandom`` or an HKDF output — never a 32-bit
  integer fed to a statistical generator (the weakness of Flower's legacy SecAgg+, its
  issue #7522).

Every error from the library (a forged ciphertext, a bad signature, a malformed key) is
translated here, at the boundary, into :class:`~sheaf.core.errors.SecAggError`.

Private keys stay ``cryptography`` key objects (loading one from bytes costs as much as
an agreement); only a mask key that is Shamir-shared is ever turned into bytes
(:func:`private_bytes`, :func:`load_private`).

Example:
    >>> a_private, a_public = generate_keypair()
    >>> b_private, b_public = generate_keypair()
    >>> agree(a_private, b_public) == agree(b_private, a_public)
    True
    >>> key = derive_key(agree(a_private, b_public), b"shares", b"instance-1")
    >>> open_sealed(key, seal(key, b"share", b"1->2"), b"1->2")
    b'share'
    >>> expand_mask(bytes(32), 3, bits=32).tolist()  # AES-256 of the zero block: dc95c078 a2408989 ad48a214
    [2025887196, 2307473570, 346179757]

References:
    Bernstein. Curve25519: New Diffie-Hellman Speed Records. PKC 2006. Krawczyk.
    Cryptographic Extraction and Key Derivation: The HKDF Scheme. CRYPTO 2010 (RFC 5869).
    Bernstein. ChaCha, a variant of Salsa20. 2008; RFC 8439 (ChaCha20-Poly1305). FIPS 197
    (AES); NIST SP 800-38A (the counter mode).
    Bernstein, Duif, Lange, Schwabe, Yang. High-Speed High-Security Signatures. CHES 2011
    (Ed25519).
"""

from __future__ import annotations

import functools
import os
import threading
import time

import numpy as np
import numpy.typing as npt
from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from sheaf.core.errors import SecAggError

__all__ = [
    "KEY_BYTES",
    "NONCE_BYTES",
    "SIGNATURE_BYTES",
    "TAG_BYTES",
    "add_mask",
    "agree",
    "derive_key",
    "expand_mask",
    "generate_keypair",
    "generate_signing_keypair",
    "keystream",
    "load_private",
    "load_public",
    "open_sealed",
    "private_bytes",
    "public_key_of",
    "seal",
    "sign",
    "verify",
]

#: Bytes of every key, seed and shared secret (256 bits).
KEY_BYTES = 32
#: Bytes of an AEAD nonce (96 bits), sent in front of each ciphertext.
NONCE_BYTES = 12
#: Bytes of a Poly1305 tag, at the end of each ciphertext.
TAG_BYTES = 16
#: Bytes of an Ed25519 signature.
SIGNATURE_BYTES = 64

_RAW = serialization.Encoding.Raw
_RAW_PUBLIC = serialization.PublicFormat.Raw
_RAW_PRIVATE = serialization.PrivateFormat.Raw
_NO_ENCRYPTION = serialization.NoEncryption()


def generate_keypair() -> tuple[X25519PrivateKey, bytes]:
    """A fresh X25519 key pair, ``(private key, 32 raw public bytes)``, from the OS's generator."""
    private = X25519PrivateKey.generate()
    return private, private.public_key().public_bytes(_RAW, _RAW_PUBLIC)


def private_bytes(private: X25519PrivateKey) -> bytes:
    """The 32 raw bytes of an X25519 private key (to Shamir-share it)."""
    return private.private_bytes(_RAW, _RAW_PRIVATE, _NO_ENCRYPTION)


def load_private(raw: bytes) -> X25519PrivateKey:
    """An X25519 private key from its 32 raw bytes.

    Raises:
        SecAggError: if ``raw`` is not 32 bytes.
    """
    try:
        return X25519PrivateKey.from_private_bytes(raw)
    except ValueError as exc:
        raise SecAggError(f"not an X25519 private key: {exc}") from None


def public_key_of(private: X25519PrivateKey) -> bytes:
    """The 32 raw bytes of a private key's public key."""
    return private.public_key().public_bytes(_RAW, _RAW_PUBLIC)


def load_public(raw: bytes) -> X25519PublicKey:
    """An X25519 public key from its 32 raw bytes (to agree with it many times).

    Raises:
        SecAggError: if ``raw`` is not 32 bytes.
    """
    try:
        return X25519PublicKey.from_public_bytes(raw)
    except ValueError as exc:
        raise SecAggError(f"not an X25519 public key: {exc}") from None


def agree(private: X25519PrivateKey, public: bytes | X25519PublicKey) -> bytes:
    """The X25519 shared secret of ``private`` (ours) and ``public`` (the peer's, raw or loaded).

    Raises:
        SecAggError: if the peer's key is malformed or of low order.
    """
    try:
        loaded = public if isinstance(public, X25519PublicKey) else X25519PublicKey.from_public_bytes(public)
        return private.exchange(loaded)
    except ValueError as exc:
        raise SecAggError(f"key agreement failed: {exc}") from None


def derive_key(shared: bytes, purpose: bytes, context: bytes) -> bytes:
    """A 256-bit key for ``purpose`` in protocol instance ``context``, by HKDF-SHA256."""
    return HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=context, info=b"sheaf-secagg/" + purpose).derive(
        shared
    )


def seal(key: bytes, plaintext: bytes, associated: bytes) -> bytes:
    """``nonce || ChaCha20-Poly1305(key, nonce, plaintext, associated)`` with a random nonce."""
    nonce = os.urandom(NONCE_BYTES)
    return nonce + ChaCha20Poly1305(key).encrypt(nonce, plaintext, associated)


def open_sealed(key: bytes, sealed: bytes, associated: bytes) -> bytes:
    """The plaintext of :func:`seal`'s output.

    Raises:
        SecAggError: if the ciphertext was forged, altered, or sealed for other associated data.
    """
    if len(sealed) < NONCE_BYTES + TAG_BYTES:
        raise SecAggError(f"an encrypted share of {len(sealed)} bytes is too short")
    try:
        return ChaCha20Poly1305(key).decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], associated)
    except InvalidTag:
        raise SecAggError("an encrypted share failed authentication (forged, altered or misrouted)") from None


def generate_signing_keypair() -> tuple[Ed25519PrivateKey, bytes]:
    """A fresh Ed25519 key pair, ``(private key, 32 raw public bytes)``."""
    private = Ed25519PrivateKey.generate()
    return private, private.public_key().public_bytes(_RAW, _RAW_PUBLIC)


def sign(private: Ed25519PrivateKey, message: bytes) -> bytes:
    """The Ed25519 signature of ``message``."""
    return private.sign(message)


def verify(public: bytes, signature: bytes, message: bytes) -> None:
    """Check an Ed25519 signature.

    Raises:
        SecAggError: if the key is malformed or the signature does not match.
    """
    try:
        Ed25519PublicKey.from_public_bytes(public).verify(signature, message)
    except (InvalidSignature, ValueError):
        raise SecAggError("a consistency signature does not verify") from None


class _Buffers(threading.local):
    """Per-thread scratch: zeros to encrypt and room for the keystream, grown as needed."""

    def __init__(self) -> None:
        self.zeros = bytearray()
        self.out = bytearray()
        self.words: npt.NDArray[np.uint32] = np.zeros(0, np.uint32)

    def ensure(self, count: int) -> None:
        if len(self.zeros) < count:
            self.zeros = bytearray(count)
            self.out = bytearray(count + 64)
            self.words = np.zeros(0, np.uint32)

    def keystream_words(self, count: int) -> npt.NDArray[np.uint32]:
        """The first ``count`` bytes of ``out`` as little-endian 32-bit words (a view, kept)."""
        if self.words.size * 4 != count:  # ensure() drops the view when it replaces the buffer
            self.words = np.frombuffer(memoryview(self.out)[:count], dtype="<u4")
        return self.words


_BUFFERS = _Buffers()


#: Counter mode from counter block zero (immutable, so one object serves every mask).
_COUNTER_ZERO = modes.CTR(bytes(16))
#: GCM with the all-zero 96-bit nonce: it encrypts with the counter blocks ``0^96 || 2``,
#: ``0^96 || 3``, ... — counter mode's blocks 2, 3, ... (its tag is never computed).
_GCM_FROM_BLOCK_TWO = modes.GCM(bytes(12))
#: Keystreams at least this long may go through GCM's code path (below, CTR's is as fast).
_GCM_MIN_BYTES = 1 << 16
#: GCM's counter is the last 32 bits of the block: it matches counter mode up to block 2**32 - 1.
_GCM_MAX_BYTES = 16 * ((1 << 32) - 1)


def _cipher(seed: bytes) -> Cipher[modes.CTR]:
    if len(seed) != KEY_BYTES:
        raise SecAggError(f"a mask seed must be {KEY_BYTES} bytes, got {len(seed)}")
    return Cipher(algorithms.AES256(seed), _COUNTER_ZERO)


def _keystream_into(seed: bytes, count: int, out: bytearray, *, through_gcm: bool | None = None) -> None:
    """Write the first ``count`` bytes of AES-256-CTR's keystream under ``seed`` (counter
    block zero) into ``out``, which holds at least ``count + 64`` bytes.

    The same bytes either way: counter mode's own code, or — for long streams, where
    OpenSSL's GCM code is the faster (on CPUs with vector AES it encrypts several blocks per
    instruction, its CTR code one) — blocks 0 and 1 from counter mode and blocks 2, 3, ...
    from GCM under the zero nonce, whose counter blocks are exactly those (tested against
    AES of the counter blocks). Only the keystream is used; the key is the mask's seed,
    used for this one vector, as before.
    """
    _BUFFERS.ensure(count)
    zeros = memoryview(_BUFFERS.zeros)
    if through_gcm is None:
        through_gcm = _GCM_MIN_BYTES <= count <= _GCM_MAX_BYTES and _gcm_is_faster()
    if not through_gcm or count <= 32:
        _cipher(seed).encryptor().update_into(zeros[:count], out)
        return
    view = memoryview(out)
    view[:32] = _cipher(seed).encryptor().update(zeros[:32])
    Cipher(algorithms.AES256(seed), _GCM_FROM_BLOCK_TWO).encryptor().update_into(zeros[: count - 32], view[32:])


@functools.cache
def _gcm_is_faster() -> bool:
    """Whether OpenSSL's GCM code gives this CPU a 256 KiB keystream faster than its CTR
    code: timed once per process, the fastest of five each, interleaved. Either answer gives
    the same bytes; it only picks the faster code."""
    count, out, key = 1 << 18, bytearray((1 << 18) + 64), os.urandom(KEY_BYTES)
    best = {False: float("inf"), True: float("inf")}
    for _ in range(5):
        for gcm in best:
            started = time.perf_counter()
            _keystream_into(key, count, out, through_gcm=gcm)
            best[gcm] = min(best[gcm], time.perf_counter() - started)
    return best[True] < best[False]


def keystream(seed: bytes, count: int) -> bytes:
    """The first ``count`` bytes of AES-256-CTR's keystream under key ``seed``, counter block zero."""
    if len(seed) != KEY_BYTES:
        raise SecAggError(f"a mask seed must be {KEY_BYTES} bytes, got {len(seed)}")
    out = bytearray(count + 64)
    _keystream_into(seed, count, out)
    return bytes(memoryview(out)[:count])


def expand_mask(seed: bytes, length: int, *, bits: int) -> npt.NDArray[np.uint32]:
    """``length`` uniform elements of Z_{2^bits} from the keystream of ``seed`` (``bits <= 32``).

    Word ``i`` is bytes ``4i .. 4i+3`` of the keystream, little-endian, reduced mod
    ``2**bits``: uniform, since every keystream word is.
    """
    words = np.frombuffer(keystream(seed, 4 * length), dtype="<u4").astype(np.uint32, copy=False)
    return words if bits == 32 else words & np.uint32((1 << bits) - 1)


def add_mask(total: npt.NDArray[np.uint32], seed: bytes, *, subtract: bool = False) -> None:
    """Add (or subtract) :func:`expand_mask` of ``seed`` to ``total`` in place, mod 2**32.

    The keystream is written into a per-thread buffer rather than a fresh one for every
    mask — the cost of a masked input is one keystream and one addition per mask.
    """
    if len(seed) != KEY_BYTES:
        raise SecAggError(f"a mask seed must be {KEY_BYTES} bytes, got {len(seed)}")
    count = 4 * total.size
    _BUFFERS.ensure(count)
    _keystream_into(seed, count, _BUFFERS.out)
    (np.subtract if subtract else np.add)(total, _BUFFERS.keystream_words(count), out=total)
