"""The messages of SecAgg+, and their bytes: typed, frozen, never pickled.

Every message a party sends is one frozen dataclass; a transport moves them as bytes
(:func:`encode_message`, :func:`decode_message`) and nothing else. The encoding is
explicit: ``b"SA" | version | type tag`` then the fields in order — unsigned 64-bit
integers big-endian, byte strings and lists behind a 32-bit length, ring vectors as
packed little-endian words of ``ceil(bits / 8)`` bytes. Decoding checks every length
against what is left and against a cap, and refuses trailing bytes, so a hostile peer
gets a :class:`~sheaf.core.errors.SecAggError`, never an allocation it asked for.

Client to server, one per stage: :class:`AdvertiseKeys`, :class:`ShareKeys`,
:class:`MaskedInput`, :class:`ConsistencySignature`, :class:`UnmaskShares`. Server to a
client, one per stage: :class:`PeerKeys`, :class:`ForwardedShares`,
:class:`ConsistencyRequest`, :class:`UnmaskRequest`. Every message names the protocol
instance it belongs to.

Example:
    >>> message = AdvertiseKeys(bytes(16), 7, bytes(32), bytes(32), bytes(32))
    >>> data = encode_message(message)
    >>> len(data), decode_message(data) == message
    (140, True)
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from sheaf.core.errors import SecAggError

__all__ = [
    "AdvertiseKeys",
    "ClientMessage",
    "ConsistencyRequest",
    "ConsistencySignature",
    "EncryptedShare",
    "ForwardedShares",
    "MaskedInput",
    "PeerKeys",
    "ServerMessage",
    "ShareKeys",
    "UnmaskRequest",
    "UnmaskShares",
    "decode_message",
    "encode_message",
    "expect_turn",
]

_MAGIC = b"SA"
#: 2: masks expanded by AES-256-CTR (1: ChaCha20). Peers of different versions would add
#: masks that do not cancel, so a message of another version is refused.
_VERSION = 2
#: The most entries a list in a message may have, and the longest byte string.
_MAX_ITEMS = 1 << 20
_MAX_BLOB = 1 << 16
_MAX_VECTOR = 1 << 30


@dataclass(frozen=True)
class AdvertiseKeys:
    """Stage 1, client to server: the client's three fresh public keys.

    Attributes:
        instance: the protocol instance.
        client: the sender.
        cipher_key: X25519 key for encrypting shares sent to it.
        mask_key: X25519 key for agreeing pairwise masks.
        signing_key: Ed25519 key for its consistency signature.
    """

    instance: bytes
    client: int
    cipher_key: bytes
    mask_key: bytes
    signing_key: bytes


@dataclass(frozen=True)
class PeerKeys:
    """Stage 1, server to a client: the advertised keys of its neighbours that advertised."""

    instance: bytes
    keys: tuple[AdvertiseKeys, ...]


@dataclass(frozen=True)
class EncryptedShare:
    """One client's shares for one neighbour, sealed with their pairwise encryption key."""

    sender: int
    recipient: int
    ciphertext: bytes


@dataclass(frozen=True)
class ShareKeys:
    """Stage 2, client to server: its sealed shares, one per neighbour that advertised."""

    instance: bytes
    client: int
    shares: tuple[EncryptedShare, ...]


@dataclass(frozen=True)
class ForwardedShares:
    """Stage 2, server to a client: the sealed shares its neighbours addressed to it."""

    instance: bytes
    shares: tuple[EncryptedShare, ...]


@dataclass(frozen=True)
class MaskedInput:
    """Stage 3, client to server: its input plus its self mask and pairwise masks, in Z_{2^bits}."""

    instance: bytes
    client: int
    bits: int
    vector: npt.NDArray[np.uint32] = field(compare=False)

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, MaskedInput)
            and (self.instance, self.client, self.bits) == (other.instance, other.client, other.bits)
            and np.array_equal(self.vector, other.vector)
        )

    __hash__ = None  # type: ignore[assignment]


@dataclass(frozen=True)
class ConsistencyRequest:
    """Stage 4, server to a client: the clients whose masked inputs the sum will hold."""

    instance: bytes
    survivors: tuple[int, ...]


@dataclass(frozen=True)
class ConsistencySignature:
    """Stage 4, client to server: its signature on the instance and the survivors."""

    instance: bytes
    client: int
    signature: bytes


@dataclass(frozen=True)
class UnmaskRequest:
    """Stage 5, server to a client: the survivors again, with the signatures on them."""

    instance: bytes
    survivors: tuple[int, ...]
    signatures: tuple[ConsistencySignature, ...]


@dataclass(frozen=True)
class UnmaskShares:
    """Stage 5, client to server: for each neighbour, one share — of its self-mask seed if it
    survived, of its mask key if it dropped out after sharing — never both."""

    instance: bytes
    client: int
    seed_shares: tuple[tuple[int, bytes], ...]
    key_shares: tuple[tuple[int, bytes], ...]


ClientMessage = AdvertiseKeys | ShareKeys | MaskedInput | ConsistencySignature | UnmaskShares
ServerMessage = PeerKeys | ForwardedShares | ConsistencyRequest | UnmaskRequest


def expect_turn(
    message: ClientMessage | ServerMessage,
    expected: type[Any] | None,
    instance: bytes,
    *,
    out_of_turn: str,
    sender: str = "",
) -> None:
    """The check both state machines make before anything else: the message is of the kind
    the current stage expects (``expected``; None: none is) and of this protocol instance.

    Raises:
        SecAggError: ``"<kind> <out_of_turn>"`` for a message out of turn, or
            ``"<sender>a message of another protocol instance"``.
    """
    if expected is None or not isinstance(message, expected):
        raise SecAggError(f"{type(message).__name__} {out_of_turn}")
    if message.instance != instance:
        raise SecAggError(f"{sender}a message of another protocol instance")


_TAGS: dict[type[Any], int] = {
    AdvertiseKeys: 1,
    PeerKeys: 2,
    ShareKeys: 3,
    ForwardedShares: 4,
    MaskedInput: 5,
    ConsistencyRequest: 6,
    ConsistencySignature: 7,
    UnmaskRequest: 8,
    UnmaskShares: 9,
}


#: Fixed-width fields, compiled once (a message of 99 sealed shares has some 400 of them).
_U64 = struct.Struct(">Q")
_U32 = struct.Struct(">I")
_SHARE_HEAD = struct.Struct(">QQI")  # sender, recipient, ciphertext length
_PAIR_HEAD = struct.Struct(">QI")  # peer, share length


class _Writer:
    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def u64(self, value: int) -> None:
        self.parts.append(_U64.pack(value))

    def blob(self, value: bytes) -> None:
        self.parts.append(_U32.pack(len(value)))
        self.parts.append(value)

    def count(self, value: int) -> None:
        self.parts.append(_U32.pack(value))


class _Reader:
    """Reads fields in place (``unpack_from``: no copy per integer); every read checks
    that the bytes are there, every count and length its cap, before anything is taken."""

    def __init__(self, data: bytes) -> None:
        self.data = memoryview(data)
        self.at = 0

    def _need(self, size: int) -> int:
        at = self.at
        if size > len(self.data) - at:
            raise SecAggError(f"a secure-aggregation message is truncated (needs {size} more bytes)")
        self.at = at + size
        return at

    def take(self, size: int) -> bytes:
        at = self._need(size)
        return bytes(self.data[at : at + size])

    def skip(self, size: int) -> int:
        """The offset of the next ``size`` bytes, which the caller reads in place."""
        return self._need(size)

    def u64(self) -> int:
        value: int = _U64.unpack_from(self.data, self._need(8))[0]
        return value

    def count(self, cap: int = _MAX_ITEMS) -> int:
        value: int = _U32.unpack_from(self.data, self._need(4))[0]
        if value > cap:
            raise SecAggError(f"a secure-aggregation message declares {value} entries, more than {cap}")
        return value

    def blob(self) -> bytes:
        data, at = self.data, self._need(4)
        (size,) = _U32.unpack_from(data, at)
        if size > _MAX_BLOB:
            raise SecAggError(f"a secure-aggregation message declares {size} entries, more than {_MAX_BLOB}")
        if size > len(data) - self.at:
            raise SecAggError(f"a secure-aggregation message is truncated (needs {size} more bytes)")
        at = self.at
        self.at = at + size
        return bytes(data[at : at + size])

    def share(self) -> EncryptedShare:
        """One sealed share: sender, recipient and ciphertext (a blob), read at once."""
        sender, recipient, size = _SHARE_HEAD.unpack_from(self.data, self._need(_SHARE_HEAD.size))
        if size > _MAX_BLOB:
            raise SecAggError(f"a secure-aggregation message declares {size} entries, more than {_MAX_BLOB}")
        return EncryptedShare(sender, recipient, self.take(size))

    def pair(self) -> tuple[int, bytes]:
        """A peer and a blob (an unmasking share), the head read at once."""
        peer, size = _PAIR_HEAD.unpack_from(self.data, self._need(_PAIR_HEAD.size))
        if size > _MAX_BLOB:
            raise SecAggError(f"a secure-aggregation message declares {size} entries, more than {_MAX_BLOB}")
        return peer, self.take(size)

    def done(self) -> None:
        if self.at != len(self.data):
            raise SecAggError(f"a secure-aggregation message has {len(self.data) - self.at} trailing bytes")


#: An AdvertiseKeys of the usual sizes (16-byte instance, 32-byte keys) in one call: the
#: same bytes as its fields one by one (a server sends 99 of them to each of 100 clients).
_KEYS_USUAL = struct.Struct(">I16sQI32sI32sI32s")


def _write_keys(w: _Writer, m: AdvertiseKeys) -> None:
    if len(m.instance) == 16 and len(m.cipher_key) == len(m.mask_key) == len(m.signing_key) == 32:
        w.parts.append(_KEYS_USUAL.pack(16, m.instance, m.client, 32, m.cipher_key, 32, m.mask_key, 32, m.signing_key))
        return
    w.blob(m.instance)
    w.u64(m.client)
    for key in (m.cipher_key, m.mask_key, m.signing_key):
        w.blob(key)


def _read_keys(r: _Reader) -> AdvertiseKeys:
    return AdvertiseKeys(r.blob(), r.u64(), r.blob(), r.blob(), r.blob())


def _write_shares(w: _Writer, shares: tuple[EncryptedShare, ...]) -> None:
    w.count(len(shares))
    for share in shares:
        w.parts.append(_SHARE_HEAD.pack(share.sender, share.recipient, len(share.ciphertext)))
        w.parts.append(share.ciphertext)


def _read_shares(r: _Reader) -> tuple[EncryptedShare, ...]:
    return tuple(r.share() for _ in range(r.count()))


def _write_ids(w: _Writer, ids: tuple[int, ...]) -> None:
    w.count(len(ids))
    for value in ids:
        w.u64(value)


def _read_ids(r: _Reader) -> tuple[int, ...]:
    return tuple(r.u64() for _ in range(r.count()))


def _write_pairs(w: _Writer, pairs: tuple[tuple[int, bytes], ...]) -> None:
    w.count(len(pairs))
    for peer, share in pairs:
        w.parts.append(_PAIR_HEAD.pack(peer, len(share)))
        w.parts.append(share)


def _read_pairs(r: _Reader) -> tuple[tuple[int, bytes], ...]:
    return tuple(r.pair() for _ in range(r.count()))


def _write_vector(w: _Writer, bits: int, vector: npt.NDArray[np.uint32]) -> None:
    width = -(-bits // 8)
    w.u64(bits)
    w.count(vector.size)
    if width == 4:
        w.parts.append(np.ascontiguousarray(vector, dtype="<u4").tobytes())
        return
    raw = np.ascontiguousarray(vector, dtype="<u4").view(np.uint8).reshape(-1, 4)
    w.parts.append(raw[:, :width].tobytes())


def _read_vector(r: _Reader) -> tuple[int, npt.NDArray[np.uint32]]:
    bits = r.u64()
    if not 2 <= bits <= 32:
        raise SecAggError(f"a masked input declares a ring of {bits} bits")
    size = r.count(_MAX_VECTOR)
    width = -(-bits // 8)
    if width == 4:  # one copy, straight from the message's bytes
        vector = np.frombuffer(r.data, "<u4", count=size, offset=r.skip(size * 4)).astype(np.uint32)
    else:
        packed = np.frombuffer(r.take(size * width), np.uint8).reshape(size, width)
        words = np.zeros((size, 4), np.uint8)
        words[:, :width] = packed
        vector = words.view("<u4").reshape(size).astype(np.uint32)
    if bits < 32 and vector.size and int(vector.max()) >= 1 << bits:
        raise SecAggError(f"a masked input holds values outside Z_2^{bits}")
    return bits, vector


def encode_message(message: ClientMessage | ServerMessage) -> bytes:
    """The bytes of a message (module docstring)."""
    w = _Writer()
    w.parts.append(_MAGIC + bytes([_VERSION, _TAGS[type(message)]]))
    if isinstance(message, AdvertiseKeys):
        _write_keys(w, message)
        return b"".join(w.parts)
    w.blob(message.instance)
    if isinstance(message, PeerKeys):
        w.count(len(message.keys))
        for keys in message.keys:
            _write_keys(w, keys)
    elif isinstance(message, ShareKeys):
        w.u64(message.client)
        _write_shares(w, message.shares)
    elif isinstance(message, ForwardedShares):
        _write_shares(w, message.shares)
    elif isinstance(message, MaskedInput):
        w.u64(message.client)
        _write_vector(w, message.bits, message.vector)
    elif isinstance(message, ConsistencyRequest):
        _write_ids(w, message.survivors)
    elif isinstance(message, ConsistencySignature):
        w.u64(message.client)
        w.blob(message.signature)
    elif isinstance(message, UnmaskRequest):
        _write_ids(w, message.survivors)
        w.count(len(message.signatures))
        for signed in message.signatures:
            w.u64(signed.client)
            w.blob(signed.signature)
    else:
        w.u64(message.client)
        _write_pairs(w, message.seed_shares)
        _write_pairs(w, message.key_shares)
    return b"".join(w.parts)


def decode_message(data: bytes) -> ClientMessage | ServerMessage:
    """The message encoded in ``data``.

    Raises:
        SecAggError: on anything but a well-formed message of a known type.
    """
    r = _Reader(data)
    head = r.take(4)
    if head[:2] != _MAGIC or head[2] != _VERSION:
        raise SecAggError("not a secure-aggregation message of this version")
    tag = head[3]
    message: ClientMessage | ServerMessage
    if tag == 1:
        message = _read_keys(r)
    else:
        instance = r.blob()
        if tag == 2:
            message = PeerKeys(instance, tuple(_read_keys(r) for _ in range(r.count())))
        elif tag == 3:
            message = ShareKeys(instance, r.u64(), _read_shares(r))
        elif tag == 4:
            message = ForwardedShares(instance, _read_shares(r))
        elif tag == 5:
            client = r.u64()
            bits, vector = _read_vector(r)
            message = MaskedInput(instance, client, bits, vector)
        elif tag == 6:
            message = ConsistencyRequest(instance, _read_ids(r))
        elif tag == 7:
            message = ConsistencySignature(instance, r.u64(), r.blob())
        elif tag == 8:
            survivors = _read_ids(r)
            signatures = tuple(ConsistencySignature(instance, r.u64(), r.blob()) for _ in range(r.count()))
            message = UnmaskRequest(instance, survivors, signatures)
        elif tag == 9:
            message = UnmaskShares(instance, r.u64(), _read_pairs(r), _read_pairs(r))
        else:
            raise SecAggError(f"unknown secure-aggregation message type {tag}")
    r.done()
    return message
