"""Fuzz inputs for every decoder of outside bytes: the wire, tensors, worker messages, stored state.

Each decoder gets a *maker*: given a seeded :class:`random.Random`, it returns one case — a
function that decodes one generated input. The inputs mix valid encodings with mutations
of them (flipped, cut, spliced, repeated bytes), structured nonsense (protobuf messages and
JSON headers whose fields take hostile values: huge, zero, negative or overflowing shapes,
unknown dtypes, NaN and infinite numbers, deep nesting, wrong types) and plain random
bytes. The rule every decoder must keep: whatever the input, it returns or raises a
:class:`~sheaf.core.errors.SheafError` — no other exception escapes, nothing hangs, and
memory does not grow with what an input *declares*.

``tests/deploy/test_fuzz.py`` runs a few thousand cases in the suite;
``benchmarks/fuzz_decoders.py`` runs 100,000 and more and prints JSON.
"""

from __future__ import annotations

import base64
import json
import math
import random
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sheaf.backends._wire import decode_groups, fit_states, pack, unpack
from sheaf.core.errors import SheafError
from sheaf.core.exactsum import ExactSum
from sheaf.core.params import Params
from sheaf.core.tensor import ALLOWED_DTYPES, array_from_record, array_to_record
from sheaf.core.tree import decode_tree, encode_tree
from sheaf.deploy._proto import federation_pb2 as pb
from sheaf.deploy.auth import AuthorizedClient, BodyDigest, ClientIdentity, RequestVerifier
from sheaf.deploy.chunks import TensorAssembler, encode_tensors, tensor_digest
from sheaf.deploy.client_state import ClientStateFile
from sheaf.deploy.wire import ResultReader, TaskReader, encode_result, encode_task_header, task_chunk

Case = Callable[[], object]
Maker = Callable[[random.Random], Case]

_DTYPES = [*sorted(ALLOWED_DTYPES), "object", "float128", "<f4", "str", "", "V8", "complex64", "float32\0"]
_HOSTILE_INTS = [0, 1, -1, 2, 3, 255, 2**31, 2**32 - 1, 2**62, 2**63 - 1, -(2**63), 10**12, 2**29]
_HOSTILE_FLOATS = [0.0, -0.0, 1e-324, 5e-324, 1e308, math.inf, -math.inf, math.nan, 1e200, -1.0]
_LIKE = Params({"w": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.ones(3, np.float32)})
LIMIT = 1 << 16


# Building blocks ---------------------------------------------------------------------------
def _int(rng: random.Random) -> int:
    return rng.choice(_HOSTILE_INTS) if rng.random() < 0.6 else rng.randint(-5, 1 << 20)


def _dim(rng: random.Random) -> int:
    return rng.choice([0, 1, 2, 3, 2**31, 2**62, 2**63 - 1, 10**12]) if rng.random() < 0.5 else rng.randint(0, 9)


def _shape(rng: random.Random) -> list[int]:
    return [_dim(rng) for _ in range(rng.choice([0, 1, 1, 2, 2, 3, 5, 33, 70]))]


def _float(rng: random.Random) -> float:
    return rng.choice(_HOSTILE_FLOATS) if rng.random() < 0.5 else rng.uniform(-1e6, 1e6)


def _text(rng: random.Random, most: int = 40) -> str:
    alphabet = "abcw_:/[]{}\\\"'0123456789é\u0663\x00 "
    return "".join(rng.choice(alphabet) for _ in range(rng.randint(0, most)))


def _bytes(rng: random.Random, most: int = 64) -> bytes:
    return rng.randbytes(rng.randint(0, most))


def mutate(rng: random.Random, data: bytes) -> bytes:
    """``data`` with a few random edits: flips, cuts, insertions, repeats."""
    out = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        choice = rng.random()
        where = rng.randint(0, len(out)) if out else 0
        if choice < 0.35 and out:
            out[min(where, len(out) - 1)] ^= 1 << rng.randint(0, 7)
        elif choice < 0.55:
            del out[where : where + rng.randint(1, 16)]
        elif choice < 0.75:
            out[where:where] = rng.randbytes(rng.randint(1, 16))
        elif choice < 0.85 and out:
            out[where:where] = out[: rng.randint(1, len(out))]
        else:
            out[where:where] = rng.choice([b"\xff" * 10, b"\x80" * 10, b"\x00", b"\x08\xff\xff\xff\xff\x0f"])
    return bytes(out)


def _spec(rng: random.Random) -> pb.TensorSpec:
    return pb.TensorSpec(
        group=rng.choice(["", "", "x", _text(rng, 8)]),
        name=rng.choice(["w", "b", "", _text(rng, 12)]),
        dtype=rng.choice(_DTYPES),
        shape=[d for d in _shape(rng) if -(2**63) <= d < 2**63],
    )


def _scalar(rng: random.Random) -> pb.Scalar:
    kind = rng.randrange(5)
    if kind == 0:
        return pb.Scalar(float_value=_float(rng))
    if kind == 1:
        return pb.Scalar(int_value=rng.choice([0, 1, -1, 2**63 - 1, -(2**63), 7]))
    if kind == 2:
        return pb.Scalar(string_value=_text(rng, 10))
    if kind == 3:
        return pb.Scalar(bool_value=rng.random() < 0.5)
    return pb.Scalar()


def _named(rng: random.Random, names: list[str]) -> list[pb.NamedScalar]:
    count = rng.choice([0, 1, 2, 3, 300]) if rng.random() < 0.9 else 1
    return [
        pb.NamedScalar(name=rng.choice([*names, _text(rng, 12), "m" * 120]), value=_scalar(rng)) for _ in range(count)
    ]


def _random_messages(rng: random.Random, valid: list[bytes]) -> list[bytes]:
    """A stream: a valid one mutated, reordered, cut or padded, or nonsense."""
    choice = rng.random()
    if choice < 0.4:
        messages = list(valid)
        edits = rng.randint(1, 3)
        for _ in range(edits):
            if messages:
                i = rng.randrange(len(messages))
                messages[i] = mutate(rng, messages[i])
        return messages
    if choice < 0.6:
        messages = list(valid)
        rng.shuffle(messages)
        return messages[: rng.randint(0, len(messages))] + [rng.choice(valid)] * rng.randint(0, 2)
    return [_bytes(rng, 200) for _ in range(rng.randint(0, 4))]


# Wire: results and tasks -----------------------------------------------------------------------
def _valid_results(rng: random.Random) -> list[bytes]:
    delta = _LIKE.map(lambda a: a + np.float32(rng.random()))
    choice = rng.randrange(3)
    if choice == 0:
        extras = {"c": _LIKE} if rng.random() < 0.5 else None
        return encode_result("t", "u", "fit", 1, num_examples=5, metrics={"loss": 0.5}, delta=delta, extras=extras,
                             chunk_bytes=rng.choice([8, 16, 1 << 20]))  # fmt: skip
    if choice == 1:
        return encode_result("t", "u", "evaluate", 1, num_examples=5, metrics={"accuracy": 0.5}, loss=0.3)
    return encode_result("t", "u", "fit", 1, failure="out of memory")


def _declared(rng: random.Random, specs: list[pb.TensorSpec], chunks: list[bytes]) -> tuple[int, str]:
    """A total and digest for ``specs`` and ``chunks``: usually the honest ones, so the checks
    after them (sizes, shapes, values) are reached too."""
    if rng.random() < 0.3:
        return rng.choice([0, 8, 24, 2**62, 2**63 - 1, len(specs)]), rng.choice(["", "0" * 64, _text(rng)])
    total = 0
    for spec in specs:
        total += math.prod(spec.shape) * (np.dtype(spec.dtype).itemsize if spec.dtype in ALLOWED_DTYPES else 4)
    digest = tensor_digest()
    for chunk in chunks:
        digest.update(chunk)
    return (total if total < 2**63 else 0), digest.hexdigest()


def _small_spec(rng: random.Random) -> pb.TensorSpec:
    """A spec whose size is small or zero (with a zero among huge dimensions), often valid."""
    dims = [rng.choice([0, 1, 2, 3]) for _ in range(rng.randint(0, 3))]
    if rng.random() < 0.5:
        dims.insert(rng.randint(0, len(dims)), 0)
        dims.insert(rng.randint(0, len(dims)), rng.choice([2**31, 2**62, 2**63 - 1]))
    return pb.TensorSpec(group=rng.choice(["", "", "x"]), name=rng.choice(["w", "b", "v"]),
                         dtype=rng.choice(["float32", "float64", "int8", "bool"]), shape=dims)  # fmt: skip


def _structured_result(rng: random.Random) -> list[bytes]:
    maker = _small_spec if rng.random() < 0.6 else _spec
    specs = [maker(rng) for _ in range(rng.choice([0, 1, 2, 3]))]
    chunks = [_bytes(rng, 40) for _ in range(rng.randint(0, 3))]
    total, digest = _declared(rng, specs, chunks)
    header = pb.Result(
        task_id=rng.choice(["t", "", "x" * 300, _text(rng)]),
        update_id=rng.choice(["u", "", _text(rng)]),
        kind=rng.choice([0, 1, 2, 99]),
        round=_int(rng) if rng.random() < 0.5 else 1,
        num_examples=rng.choice([0, 5, -1, 2**29, 2**63 - 1, -(2**63)]),
        metrics=_named(rng, ["loss", "accuracy"]),
        loss=_float(rng),
        tensors=specs,
        total_bytes=total,
        failure=rng.choice(["", "", "x" * 3000, _text(rng)]),
        tensors_digest=digest,
    )
    messages = [pb.ResultMessage(result=header).SerializeToString()]
    return messages + [pb.ResultMessage(chunk=pb.Chunk(data=c)).SerializeToString() for c in chunks]


def result_stream(rng: random.Random) -> Case:
    """:class:`~sheaf.deploy.wire.ResultReader` over a hostile result stream."""
    choice = rng.random()
    messages = _structured_result(rng) if choice < 0.4 else _random_messages(rng, _valid_results(rng))

    def decode() -> object:
        reader = ResultReader(LIMIT)
        for message in messages:
            reader.feed(message)
        return reader.finish()

    return decode


def _valid_task(rng: random.Random) -> list[bytes]:
    tensors = encode_tensors({"": _LIKE, "payload": _LIKE} if rng.random() < 0.5 else {"": _LIKE}, chunk_bytes=16)
    header = encode_task_header("t", rng.choice(["fit", "evaluate"]), 1, 0, tensors, options={"mu": 0.1},
                                client_steps=["fednova"])  # fmt: skip
    return [header, *(task_chunk(c) for c in tensors.chunks)]


def task_stream(rng: random.Random) -> Case:
    """:class:`~sheaf.deploy.wire.TaskReader` over a hostile task stream (what a client reads)."""
    if rng.random() < 0.4:
        maker = _small_spec if rng.random() < 0.6 else _spec
        specs = [maker(rng) for _ in range(rng.choice([0, 1, 2]))]
        chunks = [_bytes(rng, 40) for _ in range(rng.randint(0, 2))]
        total, digest = _declared(rng, specs, chunks)
        task = pb.Task(
            task_id=rng.choice(["t", "", _text(rng)]), kind=rng.choice([1, 2, 0, 7]), round=_int(rng) % (1 << 62),
            client_id=rng.choice([0, 2**63 - 1]), train=_named(rng, ["lr", "epochs", "batch_size", "momentum"]),
            options=_named(rng, ["mu"]), tensors=specs, total_bytes=total, tensors_digest=digest,
            client_steps=[_text(rng, 5) for _ in range(rng.choice([0, 1, 20]))],
        )  # fmt: skip
        first = pb.TaskMessage(task=task).SerializeToString()
        if rng.random() < 0.2:
            first = pb.TaskMessage(idle=pb.Idle(retry_after=_float(rng), finished=True)).SerializeToString()
        messages = [first, *(task_chunk(c) for c in chunks)]
    else:
        messages = _random_messages(rng, _valid_task(rng))

    def decode() -> object:
        reader = TaskReader(LIMIT)
        for message in messages:
            reader.feed(message)
        return reader.finish()

    return decode


# Tensors -------------------------------------------------------------------------------------
def tensor_assembler(rng: random.Random) -> Case:
    """:class:`~sheaf.deploy.chunks.TensorAssembler`: specs, then chunks, then the tensors."""
    if rng.random() < 0.5:
        maker = _small_spec if rng.random() < 0.6 else _spec
        specs = [maker(rng) for _ in range(rng.choice([0, 1, 2, 3]))]
        chunks = [_bytes(rng, 40) for _ in range(rng.randint(0, 3))]
        total, digest = _declared(rng, specs, chunks)
        if rng.random() < 0.1:
            total = _int(rng)
    else:
        sent = encode_tensors({"": _LIKE}, chunk_bytes=rng.choice([4, 16, 64]))
        specs, total, digest = list(sent.specs), sent.total_bytes, sent.digest
        chunks = [mutate(rng, c) if rng.random() < 0.3 else c for c in sent.chunks]
        if rng.random() < 0.3 and specs:
            specs[0] = pb.TensorSpec(group="", name="w", dtype=rng.choice(_DTYPES), shape=_shape_int64(rng))

    def decode() -> object:
        assembler = TensorAssembler(specs, total, digest, LIMIT, "fuzz")
        for chunk in chunks:
            assembler.add(chunk)
        return assembler.finish()

    return decode


def _shape_int64(rng: random.Random) -> list[int]:
    return [d for d in _shape(rng) if d < 2**63]


def _json_noise(rng: random.Random, depth: int = 0) -> Any:
    choice = rng.randrange(9 if depth < 4 else 6)
    if choice == 0:
        return _int(rng)
    if choice == 1:
        return rng.choice([0.5, 1e308, -1e308, 1e-320])
    if choice == 2:
        return _text(rng, 8)
    if choice == 3:
        return rng.choice([None, True, False])
    if choice == 4:
        return rng.choice([[], {}, "", [[]], {"": None}])
    if choice == 5:
        return rng.choice(sorted(ALLOWED_DTYPES))
    if choice == 6:
        return [_json_noise(rng, depth + 1) for _ in range(rng.randint(0, 3))]
    if choice == 7:
        return {_text(rng, 4): _json_noise(rng, depth + 1) for _ in range(rng.randint(0, 3))}
    return {rng.choice(["a", "p", "t", "d"]): _json_noise(rng, depth + 1)}


def array_record(rng: random.Random) -> Case:
    """:func:`~sheaf.core.tensor.array_from_record` (the run store's and the workers' tensors)."""
    if rng.random() < 0.3:
        dtype, shape, data = array_to_record(_LIKE["w"])
        shape = list(shape)
        if rng.random() < 0.5:
            data = mutate(rng, data)
        else:
            shape = _shape(rng)
    else:
        dtype = rng.choice([*_DTYPES, None, 3])
        shape = rng.choice([_shape(rng), _shape(rng), _json_noise(rng), [1.5], ["3"], [True], None, 5, [2**70]])
        data = rng.choice([_bytes(rng, 48), b"", b"\0" * 8, "text", None])
    return lambda: array_from_record(dtype, shape, data)  # type: ignore[arg-type]


# Worker messages (backends/_wire) -------------------------------------------------------------
def worker_message(rng: random.Random) -> Case:
    """:func:`~sheaf.backends._wire.unpack` and the layouts decoded from its header."""
    choice = rng.random()
    if choice < 0.35:
        message = mutate(rng, pack({"op": "fit", "clients": [1, 2]}, [np.arange(4.0), np.ones((2, 2), np.float32)]))
    elif choice < 0.7:
        head = json.dumps({"op": "x", "_tensors": _json_noise(rng)}).encode()
        message = len(head).to_bytes(8, "little") + head + _bytes(rng, 64)
    elif choice < 0.8:
        deep = ("[" * rng.choice([100, 5000, 200_000])).encode()  # nesting past the recursion limit
        message = len(deep).to_bytes(8, "little") + deep
    else:
        message = rng.randbytes(8) + _bytes(rng, 80)

    groups, noise, own = rng.random() < 0.5, _json_noise(rng), rng.random() < 0.5

    def decode() -> object:
        header, arrays = unpack(message)
        if groups:
            return decode_groups(noise if own else [["g", ["w"] * len(arrays)]], arrays)
        return fit_states(header.get("states", noise) if own else noise, arrays)

    return decode


# Stored state ----------------------------------------------------------------------------------
def state_tree(rng: random.Random) -> Case:
    """:func:`~sheaf.core.tree.decode_tree` (strategy and accountant state from the run store)."""
    arrays = [np.ones(2), np.zeros((1, 3), np.float32)]
    choice = rng.random()
    if choice < 0.3:
        structure, arrays = encode_tree({"m": _LIKE, "t": (1, [2.0, None], {"k": np.ones(2)})})
        structure = mutate(rng, structure.encode()).decode("utf-8", errors="replace")
    elif choice < 0.85:
        structure = json.dumps(_json_noise(rng))
    else:
        structure = rng.choice(["[" * 100_000, '{"t":' * 50_000, "", "\ud800", _text(rng)])
    template = rng.choice([None, (1, 2), {"m": None}, [None], _LIKE])
    return lambda: decode_tree(structure, arrays, template)


def exact_sum(rng: random.Random) -> Case:
    """:meth:`~sheaf.core.exactsum.ExactSum.from_arrays` (a worker's partial sum)."""
    like = {"w": np.zeros(3)}
    if rng.random() < 0.4:
        total = ExactSum(like)
        total.add({"w": np.array([1.0, -2.5, 1e300])}, weight=3)
        header, arrays = total.to_arrays()
        header = dict(header)
        key = rng.choice(["weight", "count", "slots"])
        header[key] = _json_noise(rng) if rng.random() < 0.7 else rng.choice([math.inf, math.nan, 2**70, -1])
    else:
        header = _json_noise(rng) if rng.random() < 0.3 else {
            "weight": _json_noise(rng), "count": _json_noise(rng), "slots": _json_noise(rng)
        }  # fmt: skip
        arrays = [rng.choice([np.zeros(3), np.zeros(2), np.zeros(3, np.float32), np.array("x"), np.zeros((3, 1))])
                  for _ in range(rng.randint(0, 3))]  # fmt: skip
    return lambda: ExactSum.from_arrays(like, header, arrays)  # type: ignore[arg-type]


_STATE_DIR = Path(tempfile.mkdtemp(prefix="sheaf-fuzz-"))


def client_state_file(rng: random.Random) -> Case:
    """:class:`~sheaf.deploy.client_state.ClientStateFile` reading a damaged or forged file."""
    path = _STATE_DIR / f"{rng.getrandbits(64):016x}.npz"
    choice = rng.random()
    if choice < 0.5:
        meta = rng.choice([
            _json_noise(rng),
            {"committed": {"round": _json_noise(rng), "structure": json.dumps(_json_noise(rng)), "count": _json_noise(rng)}},
            {"pending": {"round": 1, "structure": "[" * 50_000, "count": 0}},
            {"committed": {"round": 1, "structure": json.dumps({"a": 0}), "count": rng.choice([1, 5, -1])}},
        ])  # fmt: skip
        arrays = {"committed0": np.ones(2)} if rng.random() < 0.5 else {}
        with open(path, "wb") as handle:
            np.savez(handle, meta=np.array(json.dumps(meta)), **arrays)
        if rng.random() < 0.3:
            path.write_bytes(mutate(rng, path.read_bytes()))
    elif choice < 0.75:
        with open(path, "wb") as handle:
            np.savez(handle, meta=rng.choice([np.ones(3), np.array(b"\xff"), np.array(3)]))
    else:
        path.write_bytes(rng.choice([_bytes(rng, 200), b"PK\x03\x04" + _bytes(rng, 100)]))

    def decode() -> object:
        try:
            return ClientStateFile(path)
        finally:
            path.unlink(missing_ok=True)

    return decode


# Authentication metadata ---------------------------------------------------------------------------
def _verifier() -> tuple[ClientIdentity, RequestVerifier]:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    identity = ClientIdentity(Ed25519PrivateKey.from_private_bytes(b"\x07" * 32))
    client = AuthorizedClient(0, "a", identity.public_key)
    return identity, RequestVerifier({identity.key_id: client})


_SIGNER, _VERIFIER = _verifier()
_METHOD = "/sheaf.v1.Federation/Join"


def auth_metadata(rng: random.Random) -> Case:
    """:meth:`~sheaf.deploy.auth.RequestVerifier.authenticate` on hostile metadata."""
    digest = BodyDigest().update(b"body").digest()
    signed = list(_SIGNER.sign(_METHOD, digest))
    if rng.random() < 0.6:
        i = rng.randrange(len(signed))
        key = signed[i][0]
        value: str | bytes = rng.choice([
            _text(rng, 50), "9" * rng.choice([17, 400, 5000]), rng.randbytes(rng.randint(0, 40)), "", "\u00b2" * 3,
            base64.b64encode(rng.randbytes(64)).decode(), "A" * 10_000, mutate(rng, str(signed[i][1]).encode()),
        ])  # fmt: skip
        signed[i] = (key, value)
    else:
        signed = [(rng.choice(["sheaf-key", "sheaf-time", "sheaf-nonce", "sheaf-signature", _text(rng, 6)]),
                   rng.choice([_text(rng, 40), rng.randbytes(20)])) for _ in range(rng.randint(0, 6))]  # fmt: skip
    return lambda: _VERIFIER.authenticate(_METHOD, signed, digest)


#: Every decoder of outside input, by name.
DECODERS: dict[str, Maker] = {
    "wire.ResultReader": result_stream,
    "wire.TaskReader": task_stream,
    "chunks.TensorAssembler": tensor_assembler,
    "tensor.array_from_record": array_record,
    "backends._wire.unpack": worker_message,
    "tree.decode_tree": state_tree,
    "ExactSum.from_arrays": exact_sum,
    "ClientStateFile": client_state_file,
    "auth.RequestVerifier": auth_metadata,
}


@dataclass
class Outcome:
    """What a decoder did with its inputs.

    Attributes:
        inputs: how many it decoded.
        refused: how many raised a :class:`~sheaf.core.errors.SheafError`.
        escaped: ``"<Type>: <message>"`` of every other exception (the rule says: none).
        slowest: the most seconds one input took.
    """

    inputs: int = 0
    refused: int = 0
    escaped: list[str] = field(default_factory=list)
    slowest: float = 0.0


def fuzz(maker: Maker, count: int, seed: int) -> Outcome:
    """Decode ``count`` inputs from ``maker`` (seeded), counting refusals and anything else."""
    rng = random.Random(seed)
    outcome = Outcome()
    for _ in range(count):
        case = maker(rng)
        started = time.perf_counter()
        try:
            case()
        except SheafError:
            outcome.refused += 1
        except Exception as exc:  # the rule under test: nothing but SheafError escapes
            outcome.escaped.append(f"{type(exc).__name__}: {str(exc)[:200]}")
        outcome.inputs += 1
        outcome.slowest = max(outcome.slowest, time.perf_counter() - started)
    return outcome
