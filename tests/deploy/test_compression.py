"""Compressed updates deployed: carried natively on the result stream, decoded by the server's
half of the step, bounded by the encoder's layout — and the bytes a simulation counts are the
deployed wire bytes less exactly the protobuf framing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sheaf.compress import build_encoder
from sheaf.core.acceptance import UpdateRule
from sheaf.core.encoded import Encoded
from sheaf.core.params import Params
from sheaf.core.update import Update
from sheaf.data.catalog import build_federation
from sheaf.deploy._proto import federation_pb2 as pb
from sheaf.deploy.chunks import encode_tensors
from sheaf.deploy.inprocess import InProcessTransport
from sheaf.deploy.keys import KeySet
from sheaf.deploy.validation import declared_problem, value_problem
from sheaf.deploy.wire import ENCODED_GROUP, ResultReader, WireError, encode_result, encode_task_header
from sheaf.quantize import SeededBits
from sheaf.run.store import RunStore
from tests.deploy.conftest import client_files, deploy_config, simulate_inline, start_client, start_server


def _varint(value: int) -> int:
    return max(1, (value.bit_length() + 6) // 7)


def chunk_framing(size: int) -> int:
    """The bytes protobuf adds around a chunk of ``size`` tensor bytes: ``Chunk.data`` (tag,
    length) inside ``ResultMessage.chunk`` / ``TaskMessage.chunk`` (tag, length)."""
    inner = 1 + _varint(size) + size
    return 1 + _varint(inner) + inner - size


def test_a_stream_is_its_tensor_bytes_plus_its_header_plus_a_few_bytes_per_chunk() -> None:
    coder = build_encoder("q4", 3_000_000, rotate=False)
    x = np.random.default_rng(0).normal(size=3_000_000)
    encoded = coder.encode(x, seed=1, bits=SeededBits(np.random.default_rng(1)))

    messages = encode_result("r1-fit-c0", "u-1", "fit", 1, num_examples=5, metrics={"train_loss": 0.5}, encoded=encoded)

    chunks = [len(pb.ResultMessage.FromString(m).chunk.data) for m in messages[1:]]
    assert sum(chunks) == encoded.nbytes and len(chunks) == 2  # 1.52 MB: two chunks of at most 1 MiB
    assert sum(map(len, messages)) == encoded.nbytes + len(messages[0]) + sum(map(chunk_framing, chunks))
    assert all(chunk_framing(c) <= 8 for c in chunks)


def test_the_reader_returns_the_encoding_untouched_and_refuses_it_beside_a_delta() -> None:
    encoded = Encoded({"codes": np.arange(6, dtype=np.uint8), "scales": np.ones(1, np.float32)})
    reader = ResultReader(limit=1 << 20)
    for message in encode_result("t", "u", "fit", 1, num_examples=3, encoded=encoded):
        reader.feed(message)
    received = reader.finish()
    assert received.delta is None and received.encoded == encoded

    both = ResultReader(limit=1 << 20)
    for message in encode_result("t", "u", "fit", 1, delta=Params({"w": np.zeros(2)}), encoded=encoded):
        both.feed(message)
    with pytest.raises(WireError, match="one of them"):
        both.finish()
    with pytest.raises(WireError, match="other than"):
        encode_result("t", "u", "fit", 1, encoded=encoded, extras={ENCODED_GROUP: Params({"w": np.zeros(1)})})


def test_the_server_refuses_an_encoding_its_encoder_cannot_make_before_taking_its_bytes() -> None:
    like = Params({"w": np.zeros(1000, np.float32)})
    layout = build_encoder("q8", 1000).layout
    honest = encode_tensors({ENCODED_GROUP: {name: np.zeros(shape, dtype) for name, dtype, shape in layout}})
    assert declared_problem(honest.specs, like, layout) is None
    larger = encode_tensors({ENCODED_GROUP: {"codes": np.zeros(10**6, np.uint8), "scales": np.zeros(2, np.float32)}})
    assert "its encoder sends" in str(declared_problem(larger.specs, like, layout))
    plain = encode_tensors({"": like})
    assert "plain delta" in str(declared_problem(plain.specs, like, layout))


def test_the_reader_counts_every_byte_of_the_stream_it_read() -> None:
    encoded = build_encoder("q8", 300_000).encode(np.ones(300_000), seed=1, bits=SeededBits(np.random.default_rng(1)))
    messages = encode_result("t", "u", "fit", 1, num_examples=3, encoded=encoded)
    reader = ResultReader(limit=1 << 20)
    for message in messages:
        reader.feed(message)

    assert reader.finish().wire_bytes == sum(map(len, messages)) > encoded.nbytes


def test_an_encoded_stream_is_held_to_the_servers_byte_limit() -> None:
    encoded = Encoded({"codes": np.zeros(5000, np.uint8), "scales": np.ones(1, np.float32)})
    messages = encode_result("t", "u", "fit", 1, num_examples=3, encoded=encoded)
    reader = ResultReader(limit=4096)

    with pytest.raises(WireError, match="more than 4096 bytes"):
        reader.feed(messages[0])  # refused on its header, before any tensor byte is taken


def test_an_encoded_update_is_judged_on_its_weight_and_extras_before_it_is_decoded() -> None:
    like = Params({"w": np.zeros(4, np.float32)})
    encoded = Encoded({"codes": np.zeros(4, np.uint8), "scales": np.ones(1, np.float32)})
    rule = UpdateRule("fedavg").narrowed(max_weight=100, weight_caps={7: 10})

    fine, norm = value_problem(Update(7, Params({}), 10, encoded=encoded), like, rule)
    over, _ = value_problem(Update(7, Params({}), 11, encoded=encoded), like, rule)
    bad_extras = Params({"w": np.array([0, np.inf, 0, 0], np.float32)})
    poisoned, _ = value_problem(Update(3, Params({}), 5, extras={"c": bad_extras}, encoded=encoded), like, rule)

    assert fine is None and np.isnan(norm)  # its delta is judged once decoded, by the same rule
    assert "claims 11 examples, more than the 10" in str(over)
    assert "extra tensors 'c' hold NaN or infinite values" in str(poisoned)


@pytest.mark.parametrize("encoder", ["topk", "q4"])
def test_a_compressed_deployed_run_equals_its_simulation_and_counts_its_wire_bytes(
    tmp_path: Path, keys: KeySet, transport: InProcessTransport, encoder: str
) -> None:
    extra = [f"compression.encoder={encoder}"] + (["compression.rotate=true"] if encoder == "q4" else [])
    config = deploy_config(tmp_path, "name=deployed", *extra)
    files = client_files(config, tmp_path / "data")
    central = build_federation(config.data, config.seed).central_test
    np.savez(tmp_path / "central.npz", x=central.x, y=central.y)  # the server's own held-out data
    server = start_server(config, keys, transport=transport, test_data=tmp_path / "central.npz")
    clients = [start_client(transport, keys.client_keys[i], files[i], tmp_path / f"state-{i}") for i in range(4)]

    result = server.result()

    assert [client.status() for client in clients] == [0, 0, 0, 0]
    simulated = simulate_inline(config.replace(name="simulated"))
    assert result.params.array_equal(simulated.params)  # topk's residual moved on each client as in simulation
    assert list(result.history) == list(simulated.history)
    with RunStore.open(result.run_path, readonly=True) as a, RunStore.open(simulated.run_path, readonly=True) as b:
        wire, counted = a.client_traffic(), b.client_traffic()
        assert a.failures() == []
        layout = a.meta["compression"]
    assert [(r, c) for r, c, _, _ in wire] == [(r, c) for r, c, _, _ in counted] and len(wire) == 5 * 4
    encoded_bytes = layout["upload_bytes"]
    model = simulated.params.nbytes
    for (round, client, down, up), (_, _, sim_down, sim_up) in zip(wire, counted, strict=True):
        # Simulation: the exact encoding; deployment: that, its result header and each chunk's framing.
        assert sim_up == encoded_bytes < model / 4
        assert 0 < up - sim_up <= 400 + chunk_framing(encoded_bytes), (round, client, up - sim_up)
        # Download: the model; deployed, plus its task header (with the round's options) and framing.
        header = encode_task_header("r1-fit-c0", "fit", round, client, encode_tensors({"": simulated.params}))
        assert sim_down == model
        assert down - sim_down == pytest.approx(len(header) + chunk_framing(model), abs=400)
        assert down - sim_down > 0
