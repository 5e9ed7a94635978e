"""Tensors on the wire: described by specs, sent as raw little-endian bytes in chunks.

Named groups of tensors (group ``""`` is the model itself; others are a strategy's
payload or a client's extras) become a list of :class:`TensorSpec` messages (group, name,
dtype, shape), a total byte count, a digest of all bytes, and the bytes themselves cut
into chunks of at most :data:`CHUNK_BYTES` — so no gRPC message comes near its size
limit, whatever the model's size.

:class:`TensorAssembler` is the receiving side. It checks the specs first (dtype on the
allow-list, shapes non-negative, the declared total equal to the tensors' sizes and within
the receiver's limit), allocates only as bytes arrive — a header that declares a large
update costs nothing until its bytes come, so a sender cannot pin memory with headers —
refuses chunks that would overflow, and at the end requires exactly the declared bytes
with the declared digest. Any violation is one :class:`WireError`. Nothing is ever
unpickled: arrays are rebuilt by :func:`sheaf.core.tensor.array_from_record`.

References:
    Aumasson, Neves, Wilcox-O'Hearn, Winnerlein. BLAKE2: simpler, smaller, fast as MD5,
    ACNS 2013; RFC 7693 (the tensor digest).

Example:
    >>> import numpy as np
    >>> from sheaf.core.params import Params
    >>> sent = encode_tensors({"": Params({"w": np.arange(6, dtype=np.float32)})}, chunk_bytes=16)
    >>> [len(c) for c in sent.chunks], sent.total_bytes
    ([16, 8], 24)
    >>> receiver = TensorAssembler(sent.specs, sent.total_bytes, sent.digest, limit=1024, what="task")
    >>> for chunk in sent.chunks:
    ...     receiver.add(chunk)
    >>> receiver.finish()[""]["w"].tolist()
    [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import numpy as np

from sheaf.core.errors import SheafError
from sheaf.core.params import Params
from sheaf.core.tensor import ALLOWED_DTYPES, array_from_record
from sheaf.deploy._proto import federation_pb2 as pb

__all__ = [
    "CHUNK_BYTES",
    "MAX_MESSAGE_BYTES",
    "EncodedTensors",
    "TensorAssembler",
    "WireError",
    "encode_tensors",
    "tensor_digest",
]

#: Tensor bytes per chunk message; a receiver refuses larger chunks.
CHUNK_BYTES = 1 << 20

#: The largest single gRPC message either side lets through to sheaf's readers. Anything
#: between a chunk and this is refused by the readers with a clear reason; beyond it, gRPC
#: itself refuses the message (RESOURCE_EXHAUSTED), so no message can exhaust memory.
MAX_MESSAGE_BYTES = 16 << 20


def tensor_digest() -> Any:
    """A fresh hash of tensor bytes: BLAKE2b-256, about twice as fast as SHA-256 in software."""
    return hashlib.blake2b(digest_size=32)


class WireError(SheafError):
    """A message is malformed, too large, out of order, or not what the receiver expects."""


# Tensors --------------------------------------------------------------------------------
@dataclass(frozen=True)
class EncodedTensors:
    """Named groups of tensors ready to send: their specs and their bytes in chunks.

    Attributes:
        specs: one spec per tensor, in stream order.
        total_bytes: the sum of the tensors' sizes.
        chunks: the tensor bytes, each at most :data:`CHUNK_BYTES` long.
        digest: hex BLAKE2b-256 of all tensor bytes (:func:`tensor_digest`).
    """

    specs: list[pb.TensorSpec]
    total_bytes: int
    chunks: list[bytes]
    digest: str


def _little_endian(array: np.ndarray[Any, Any]) -> memoryview:
    if array.dtype.name not in ALLOWED_DTYPES:
        raise WireError(f"cannot send an array of dtype {array.dtype.name}; use one of {sorted(ALLOWED_DTYPES)}")
    little = np.ascontiguousarray(array.astype(array.dtype.newbyteorder("<"), copy=False))
    return little.data.cast("B")


def encode_tensors(
    groups: Mapping[str, Mapping[str, np.ndarray[Any, Any]]], chunk_bytes: int = CHUNK_BYTES
) -> EncodedTensors:
    """Describe and chunk named groups of tensors (group ``""`` is the model's own).

    Small tensors share a chunk; a large one spans many. Each chunk is a fresh ``bytes``.

    Raises:
        WireError: if an array's dtype cannot travel.
    """
    specs: list[pb.TensorSpec] = []
    views: list[memoryview] = []
    for group, tensors in groups.items():
        for name, array in tensors.items():
            specs.append(pb.TensorSpec(group=group, name=name, dtype=array.dtype.name, shape=list(array.shape)))
            views.append(_little_endian(array))
    chunks: list[bytes] = []
    pending = bytearray()
    digest = tensor_digest()
    for view in views:
        digest.update(view)
        offset = 0
        while offset < len(view):
            take = min(chunk_bytes - len(pending), len(view) - offset)
            pending += view[offset : offset + take]
            offset += take
            if len(pending) == chunk_bytes:
                chunks.append(bytes(pending))
                pending = bytearray()
    if pending:
        chunks.append(bytes(pending))
    return EncodedTensors(specs, sum(len(v) for v in views), chunks, digest.hexdigest())


class TensorAssembler:
    """Collects declared tensors' bytes chunk by chunk, checking as it goes (see the module).

    Args:
        specs: the tensors, in stream order.
        total_bytes: the byte count the sender declares.
        digest: the hex digest the sender declares for all bytes.
        limit: the most bytes this receiver accepts.
        what: names the stream in error messages (``task``, ``result``).

    Raises:
        WireError: if the specs are invalid, inconsistent or over the limit.
    """

    def __init__(self, specs: Sequence[pb.TensorSpec], total_bytes: int, digest: str, limit: int, what: str) -> None:
        seen: set[tuple[str, str]] = set()
        self._layout: list[tuple[str, str, str, tuple[int, ...], int]] = []
        expected = 0
        for spec in specs:
            key = (spec.group, spec.name)
            if not spec.name or key in seen:
                raise WireError(f"{what}: tensor name {spec.name!r} in group {spec.group!r} is empty or repeated")
            seen.add(key)
            if spec.dtype not in ALLOWED_DTYPES:
                raise WireError(
                    f"{what}: tensor {spec.name!r} has dtype {spec.dtype!r}; allowed: {sorted(ALLOWED_DTYPES)}"
                )
            shape = tuple(int(d) for d in spec.shape)
            if any(d < 0 for d in shape) or len(shape) > 32:
                raise WireError(f"{what}: tensor {spec.name!r} has an invalid shape {shape[:33]}")
            size = math.prod(shape) * np.dtype(spec.dtype).itemsize  # Python ints: no overflow
            expected += size
            if expected > limit:
                raise WireError(f"{what}: declares more than {limit} bytes of tensors, the most accepted")
            self._layout.append((spec.group, spec.name, spec.dtype, shape, size))
        if total_bytes != expected:
            raise WireError(f"{what}: header declares {total_bytes} bytes but its tensors take {expected}")
        self._expected = expected
        # Grows with the bytes that arrive, never past the declared size. (Keeping the chunks
        # and joining them at the end was tried: no faster in benchmarks/server_load.py, and a
        # higher peak there, on a loaded machine.)
        self._buffer = bytearray()
        self._what = what
        self._declared = digest
        self._digest = tensor_digest()

    @property
    def received(self) -> int:
        """Tensor bytes taken so far."""
        return len(self._buffer)

    def add(self, data: bytes) -> None:
        """Take the next chunk.

        Raises:
            WireError: if it is over :data:`CHUNK_BYTES` or would overflow the declared size.
        """
        if len(data) > CHUNK_BYTES:
            raise WireError(f"{self._what}: a chunk of {len(data)} bytes is over the {CHUNK_BYTES}-byte chunk size")
        if len(self._buffer) + len(data) > self._expected:
            raise WireError(f"{self._what}: more tensor bytes than the {self._expected} declared")
        self._buffer += data
        self._digest.update(data)

    def finish(self) -> dict[str, Params]:
        """The tensors by group, once every declared byte arrived with the declared digest.

        Raises:
            WireError: if bytes are missing, the digest differs, or a tensor is not float.
        """
        groups = self.finish_arrays()
        try:
            return {group: Params(arrays) for group, arrays in groups.items()}
        except SheafError as exc:
            raise WireError(f"{self._what}: {exc}") from None

    def finish_arrays(self) -> dict[str, dict[str, np.ndarray[Any, Any]]]:
        """The tensors by group as plain arrays of any allowed dtype (an encoded update's
        packed codes are integers), checked like :meth:`finish` but for being float.

        Raises:
            WireError: if bytes are missing or the digest differs.
        """
        if len(self._buffer) != self._expected:
            raise WireError(f"{self._what}: stream ended after {len(self._buffer)} of {self._expected} tensor bytes")
        if self._digest.hexdigest() != self._declared:
            raise WireError(f"{self._what}: tensor bytes do not match the digest the header declares")
        groups: dict[str, dict[str, np.ndarray[Any, Any]]] = {}
        view = memoryview(self._buffer)
        offset = 0
        for group, name, dtype, shape, size in self._layout:
            data = cast(bytes, view[offset : offset + size])  # array_from_record reads any buffer
            groups.setdefault(group, {})[name] = array_from_record(dtype, shape, data)
            offset += size
        return groups
