"""A hostile server against an unmodified client: one test per attack, each refused on the client.

The server here is :class:`~tests.deploy.fake_server.FakeServer`: it speaks the real protocol
over the in-process transport to a real :class:`~sheaf.deploy.client.DeployedClient`, and
sends whatever a test scripts. The client decides what is at stake for its data — its
task, its test split, how small a training set and batch may be, its privacy — and nothing
the server writes changes that. Issue 12 items 8-12, issue 13 items 3 and 4 (client side).
"""

from __future__ import annotations

import tempfile
import tracemalloc
from pathlib import Path
from typing import Any

import dp_accounting
import numpy as np
import pytest
from dp_accounting import rdp

from sheaf.core.config import TrainConfig
from sheaf.deploy._proto import federation_pb2 as pb
from sheaf.deploy.auth import BodyDigest, load_identity
from sheaf.deploy.client_ledger import ClientLedger
from sheaf.deploy.inprocess import InProcessTransport
from sheaf.deploy.keys import KeySet
from sheaf.deploy.policy import ClientPolicy
from sheaf.deploy.transport import METHODS
from sheaf.deploy.wire import PROTOCOL, ReceivedResult
from sheaf.privacy.plan import CLIP_OPTION
from sheaf.run.store import RunStore
from tests.deploy.conftest import ClientRun, client_files, deploy_config, events, start_client, start_server
from tests.deploy.fake_server import FakeServer, description, forged, task_stream
from tests.deploy.tasks import SoftmaxTask

#: The softmax task's model for the digits (what the test client holds).
MODEL = SoftmaxTask(64, 10).init_params(0)
#: A round the server declares centrally private: Poisson sampling at q = 1, z = 1.
CENTRAL = {
    "dp_mode": "central",
    "dp_mechanism": "poisson",
    "dp_noise_multiplier": 1.0,
    "dp_rate": 1.0,
    "dp_population": 4,
    "dp_accountant": "rdp",
    "dp_noise": "secure",
}


def _policy(**sections: dict[str, Any]) -> ClientPolicy:
    return ClientPolicy.from_dict(sections)


def _epsilon(event: dp_accounting.DpEvent, count: int, delta: float = 1e-5) -> float:
    accountant = rdp.RdpAccountant().compose(dp_accounting.SelfComposedDpEvent(event, count))
    return float(accountant.get_epsilon(delta))


@pytest.fixture
def data(tmp_path: Path) -> Path:
    """Client 0's own digits file (its own test split inside)."""
    return client_files(deploy_config(tmp_path), tmp_path / "data")[0]


def _serve(
    transport: InProcessTransport, server: FakeServer, keys: KeySet, data: Path, state: Path, **options: Any
) -> ClientRun:
    transport.start(server)
    return start_client(transport, keys.client_keys[0], data, state, **options)


def _fit(round: int, **fields: Any) -> list[bytes]:
    return task_stream("fit", round, fields.pop("params", MODEL), **fields)


# Item 8: code from the wire ------------------------------------------------------------------
def test_a_client_never_imports_code_the_server_names(
    tmp_path: Path, keys: KeySet, transport: InProcessTransport, data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    made: list[Any] = []
    monkeypatch.setattr(tempfile, "mkdtemp", lambda *a, **k: made.append(a) or "/nowhere")
    # The model it names is "tempfile:mkdtemp", and so is a client step.
    server = FakeServer(description(model="tempfile:mkdtemp"))
    refused = _serve(transport, server, keys, data, tmp_path / "state", task="")
    assert "not a name" in str(refused.error())  # no built-in model by that name: one line, exit 2
    transport.stop()

    steps = FakeServer(description()).queue(_fit(1, steps=["tempfile:mkdtemp"]))
    client = _serve(transport, steps, keys, data, tmp_path / "state")

    assert client.status() == 0
    (answer,) = steps.answers(1)
    assert "fit refused" in answer.failure and "'tempfile:mkdtemp'" in answer.failure and answer.delta is None
    assert made == []


# Item 9: data extraction --------------------------------------------------------------------
def _one_patient(tmp_path: Path) -> tuple[Path, np.ndarray[Any, Any]]:
    digits = np.load(client_files(deploy_config(tmp_path), tmp_path / "data")[0])
    patient = digits["x"][:1]
    path = tmp_path / "one.npz"
    np.savez(path, x=patient, y=digits["y"][:1], x_test=digits["x_test"], y_test=digits["y_test"])
    return path, patient[0]


def _reconstruct(result: ReceivedResult) -> np.ndarray[Any, Any]:
    """The gradient-inversion attack on a softmax update from one example: x = dW[:, j] / db[j]."""
    assert result.delta is not None
    w, b = result.delta["w"].astype(np.float64), result.delta["b"].astype(np.float64)
    j = int(np.argmax(np.abs(b)))
    return w[:, j] / b[j]


def test_a_server_cannot_make_an_update_come_from_one_patient(
    tmp_path: Path, keys: KeySet, transport: InProcessTransport
) -> None:
    one, patient = _one_patient(tmp_path)
    # What the server asked: a 99.9% test split and mini-batches of one.
    asked = {"options": {"test_fraction": 0.999}, "train": TrainConfig(epochs=1, batch_size=1, lr=0.5)}
    server = FakeServer(description()).queue(_fit(1, **asked), _fit(2))
    client = _serve(transport, server, keys, one, tmp_path / "state")

    assert client.status() == 0
    first, second = server.answers(1)[0], server.answers(2)[0]
    assert first.delta is None and "mini-batches of 1 are smaller than its policy allows" in first.failure
    assert second.delta is None and "it holds 1 training examples, fewer than its policy needs" in second.failure
    # The attack is real: where a data owner allows one-example updates, it rebuilds the patient.
    transport.stop()
    lax = _policy(data={"min_train_examples": 1, "min_batch_size": 1})
    naive = FakeServer(description(), run_id="run2").queue(_fit(1, **asked))
    assert _serve(transport, naive, keys, one, tmp_path / "state", policy=lax).status() == 0
    np.testing.assert_allclose(_reconstruct(naive.answers(1)[0]), patient, rtol=1e-4, atol=1e-4)


def test_the_test_split_is_the_clients_own_whatever_the_server_sends(
    tmp_path: Path, keys: KeySet, transport: InProcessTransport
) -> None:
    rows = np.load(client_files(deploy_config(tmp_path), tmp_path / "data")[0])
    np.savez(tmp_path / "mine.npz", x=rows["x"], y=rows["y"])  # no explicit test split: the client splits
    server = FakeServer(description()).queue(_fit(1, options={"test_fraction": 0.999, "split_seed": 5}))
    client = _serve(transport, server, keys, tmp_path / "mine.npz", tmp_path / "state")

    assert client.status() == 0
    assert server.answers(1)[0].num_examples == len(rows["y"]) - round(0.2 * len(rows["y"]))  # its own 20%


def test_a_refusal_is_recorded_by_the_server_as_that_clients(
    tmp_path: Path, keys: KeySet, transport: InProcessTransport
) -> None:
    config = deploy_config(tmp_path, "rounds=2", "evaluation.federated=false")
    files = client_files(config, tmp_path / "data")
    server = start_server(config, keys, transport=transport)
    strict = _policy(data={"min_batch_size": 50})  # the run trains with mini-batches of 10
    clients = [
        start_client(
            transport, keys.client_keys[i], files[i], tmp_path / "s", policy=strict if i == 0 else ClientPolicy()
        )
        for i in range(4)
    ]

    result = server.result()

    assert [c.status() for c in clients] == [0, 0, 0, 0]
    with RunStore.open(result.run_path, readonly=True) as store:
        reasons = {r: reason for r, c, phase, reason in store.failures() if c == 0}
    assert sorted(reasons) == [1, 2]
    assert reasons[1] == (
        "fit failed on the client: fit refused: mini-batches of 10 are smaller than its policy allows "
        "(data.min_batch_size=50)"
    )


# Item 10: path traversal ---------------------------------------------------------------------
def test_a_run_id_never_leads_outside_the_state_folder(
    tmp_path: Path, keys: KeySet, transport: InProcessTransport, data: Path
) -> None:
    state = tmp_path / "a" / "b" / "state"
    server = FakeServer(description(), run_id="../../x").queue(_fit(1))
    client = _serve(transport, server, keys, data, state)

    assert "run id '../../x' is not 1 to 64 letters" in str(client.error())
    assert sorted(p.name for p in tmp_path.rglob("x*")) == [] and server.results == []


# Item 11: client memory and hostile tasks ------------------------------------------------------
def test_a_task_declaring_a_gibibyte_is_refused_before_anything_is_allocated(
    tmp_path: Path, keys: KeySet, transport: InProcessTransport, data: Path, logs: pytest.LogCaptureFixture
) -> None:
    def huge(task: pb.Task) -> None:
        task.tensors.append(pb.TensorSpec(group="big", name="x", dtype="float32", shape=[1 << 14, 1 << 14]))
        task.total_bytes += 1 << 30

    server = FakeServer(description()).queue(forged(_fit(1), huge), unreadable=True).queue(_fit(2))
    tracemalloc.start()
    try:
        client = _serve(transport, server, keys, data, tmp_path / "state")
        assert client.status() == 0
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()

    assert peak < 256 << 20  # the model is 2.6 kB; the header declared 1 GiB
    assert [r.round for r in server.results] == [2]
    (bad,) = events(logs, "bad_message_from_server")
    assert "larger than this client's model" in bad["reason"]


def _shape(dims: list[int], group: str = "big", dtype: str = "float32") -> Any:
    def change(task: pb.Task) -> None:
        task.tensors.append(pb.TensorSpec(group=group, name="x", dtype=dtype, shape=dims))

    return change


def _model_tensor(**fields: Any) -> Any:
    def change(task: pb.Task) -> None:
        for key, value in fields.items():
            if key == "shape":
                del task.tensors[0].shape[:]
                task.tensors[0].shape.extend(value)
            else:
                setattr(task.tensors[0], key, value)

    return change


HOSTILE = {
    "(0, 2**62) tensor": (_shape([0, 1 << 62]), "impossible shape"),
    "negative dimension": (_shape([-1, 4]), "impossible shape"),
    "40 dimensions": (_shape([1] * 40), "impossible shape"),
    "object dtype": (_shape([2], dtype="object"), "has dtype 'object'"),
    "wrong model shape": (_model_tensor(shape=[3, 3]), "this client's model has float32 [64, 10]"),
    "model dtype float64": (_model_tensor(dtype="float64"), "this client's model has float32"),
    "a tensor it does not have": (_model_tensor(name="extra"), "does not have"),
    "another client's task": (lambda task: setattr(task, "client_id", 3), "addressed to client 3"),
    "bytes that disagree with the header": (
        lambda task: setattr(task, "total_bytes", task.total_bytes + 8),
        "declares",
    ),
}


def test_hostile_task_headers_never_crash_the_client(
    tmp_path: Path, keys: KeySet, transport: InProcessTransport, data: Path, logs: pytest.LogCaptureFixture
) -> None:
    server = FakeServer(description())
    for change, _ in HOSTILE.values():
        server.queue(forged(_fit(1), change), unreadable=True)
    server.queue([b"\xff\xfe not a protobuf"], unreadable=True).queue(_fit(1))
    client = _serve(transport, server, keys, data, tmp_path / "state")

    assert client.status() == 0  # one line per bad task, a reconnect, and the good task answered
    reasons = [e["reason"] for e in events(logs, "bad_message_from_server")]
    assert len(reasons) == len(HOSTILE) + 1
    for (name, (_, words)), reason in zip(HOSTILE.items(), reasons, strict=False):
        assert words in reason, (name, reason)
    assert [r.round for r in server.results] == [1] and server.results[0].delta is not None
    assert server.joins == len(HOSTILE) + 2


# Item 12: only what clients need ------------------------------------------------------------
def test_a_join_reply_carries_the_run_description_and_nothing_of_the_servers_config(
    tmp_path: Path, keys: KeySet, transport: InProcessTransport
) -> None:
    config = deploy_config(tmp_path, "seed=918273645", "privacy.mode=central", "sampling=poisson", "rounds=1")
    server = start_server(config, keys, transport=transport)
    identity = load_identity(keys.client_keys[1])
    body = pb.JoinRequest(protocol=PROTOCOL).SerializeToString()

    async def join() -> bytes:
        channel = transport.connect()
        metadata = identity.sign(METHODS["Join"], BodyDigest().update(body).digest())
        reply = await channel.unary_unary(METHODS["Join"], body, metadata=metadata, timeout=30)
        await channel.close()
        return reply

    raw = transport.run(join())
    files = client_files(config, tmp_path / "data")  # then let the run finish, so no server outlives the test
    clients = [start_client(transport, keys.client_keys[i], files[i], tmp_path / "state") for i in range(4)]
    assert server.result().history.rounds_completed == 1 and [c.status() for c in clients] == [0, 0, 0, 0]

    reply = pb.JoinReply.FromString(raw)
    assert {f.name for f, _ in reply.ListFields()} <= {
        "protocol", "client_id", "client_name", "run_id", "heartbeat_interval", "chunk_bytes", "max_update_bytes", "run"
    }  # fmt: skip
    assert (reply.run.dataset, reply.run.model, list(reply.run.hidden)) == ("digits", "mlp", [64])
    assert (reply.run.rounds, reply.run.strategy, reply.run.privacy) == (1, "fedavg", "central")
    for secret in (b"918273645", str(tmp_path).encode(), b"tests.deploy.tasks", b"poisson", b"runs_dir"):
        assert secret not in raw


def test_a_hostile_heartbeat_interval_is_held_to_a_sane_range(
    tmp_path: Path, keys: KeySet, transport: InProcessTransport, data: Path
) -> None:
    server = FakeServer(description(), heartbeat_interval=float("nan")).queue(_fit(1))
    assert _serve(transport, server, keys, data, tmp_path / "state").status() == 0


# Issue 13, item 3: a server cannot make a client overspend ----------------------------------------
def test_the_client_measures_its_budget_at_its_own_delta(
    tmp_path: Path, keys: KeySet, transport: InProcessTransport, data: Path
) -> None:
    lax_delta = {**CENTRAL, "dp_delta": 0.5}  # at delta 0.5 five rounds would cost almost nothing
    server = FakeServer(description(privacy="central"))
    server.queue(*(_fit(r, options=lax_delta, steps=["privacy_budget"]) for r in range(1, 6)))
    client = _serve(transport, server, keys, data, tmp_path / "state", privacy_budget=8.0)

    assert client.status() == 0
    answered = [r.round for r in server.results if r.delta is not None]
    refused = [r for r in server.results if r.failure]
    assert answered == [1, 2]  # epsilon 7.08 at its own delta 1e-5; round 3 would be 9.01
    assert [r.round for r in refused] == [3, 4, 5] and "past its limit 8" in refused[0].failure


def test_a_local_dp_client_always_noises_with_its_own_parameters(
    tmp_path: Path, keys: KeySet, transport: InProcessTransport, data: Path
) -> None:
    # The server labels the round local DP with a huge noise multiplier (a tiny charge) but asks
    # for no noise at all: on main the update left raw while the ledger charged z = 1000.
    label = {"dp_mode": "local", "dp_mechanism": "local", "dp_noise_multiplier": 1000.0, CLIP_OPTION: 1.0}
    server = FakeServer(description(privacy="local"))
    server.queue(_fit(1, options=label, steps=["privacy_budget"]), _fit(2, options={**label, CLIP_OPTION: 1e6}))
    own = _policy(privacy={"require": "local", "noise_multiplier": 4.0, "clip": 1.0, "budget": 5.0})
    state = tmp_path / "state"
    client = _serve(transport, server, keys, data, state, policy=own)

    assert client.status() == 0
    first, second = server.answers(1)[0], server.answers(2)[0]
    for update in (first, second):
        assert update.delta is not None and update.num_examples == 1 and not update.metrics and not update.extras
        norm = float(np.sqrt(sum(np.sum(a.astype(np.float64) ** 2) for a in update.delta.values())))
        assert 60 < norm < 140  # z C sqrt(650) = 102: its own noise, not the raw update (norm < 5)
    ledger = ClientLedger(state / f"ledger-{load_identity(keys.client_keys[0]).key_id}.json")
    assert ledger.epsilon(1e-5) == _epsilon(dp_accounting.GaussianDpEvent(2.0), 2)  # its own z = 4, twice


def test_a_budgeted_client_refuses_a_round_labelled_private_without_noise(
    tmp_path: Path, keys: KeySet, transport: InProcessTransport, data: Path
) -> None:
    label = {"dp_mode": "local", "dp_mechanism": "local", "dp_noise_multiplier": 1000.0, CLIP_OPTION: 1.0}
    central_without_noise = {**CENTRAL, "dp_noise_multiplier": 0.0}
    server = FakeServer(description(privacy="local")).queue(
        _fit(1, options=label, steps=["privacy_budget"]), _fit(2, options=central_without_noise)
    )
    client = _serve(transport, server, keys, data, tmp_path / "state", privacy_budget=3.0)

    assert client.status() == 0
    assert [r.delta for r in server.results] == [None, None]
    assert "not differentially private" in server.results[0].failure
    assert "asks this client to add no noise" in server.results[1].failure


def test_repeated_and_older_rounds_are_refused_and_an_identical_repeat_gets_the_same_answer(
    tmp_path: Path, keys: KeySet, transport: InProcessTransport, data: Path
) -> None:
    other = MODEL.map(lambda a: a + 0.1)
    server = FakeServer(description(privacy="local")).queue(
        _fit(2),
        _fit(2, params=other),
        _fit(1),
        _fit(2),  # the last: byte for byte the first
    )
    own = _policy(privacy={"require": "local", "noise_multiplier": 1.0})
    client = _serve(transport, server, keys, data, tmp_path / "state", policy=own)

    assert client.status() == 0
    first, changed, older, again = server.results
    assert "round 2 is not after round 2" in changed.failure and "round 1 is not after round 2" in older.failure
    assert again.update_id == first.update_id and again.delta is not None and first.delta is not None
    assert again.delta.array_equal(first.delta)  # the same noise: one release, charged once


def test_the_ledger_is_on_disk_before_the_update_leaves_and_spans_runs(
    tmp_path: Path, keys: KeySet, transport: InProcessTransport, data: Path
) -> None:
    state = tmp_path / "state"
    path = state / f"ledger-{load_identity(keys.client_keys[0]).key_id}.json"
    on_disk: list[tuple[int, int]] = []
    # A server that never says a round was aggregated (aggregated_round stays 0).
    server = FakeServer(description(privacy="central"))
    server.queue(*(_fit(r, options=CENTRAL, steps=["privacy_budget"]) for r in (1, 2)))
    server.on_result = lambda result: on_disk.append((result.round, ClientLedger(path).last_trained("run1")))
    assert _serve(transport, server, keys, data, state, privacy_budget=8.0).status() == 0
    assert on_disk == [(1, 1), (2, 2)]

    # A new run (a new run id) does not reset the budget: 7.08 spent, a third round costs 9.01.
    transport.stop()
    fresh = FakeServer(description(privacy="central"), run_id="run2")
    fresh.queue(_fit(1, options=CENTRAL, steps=["privacy_budget"]))
    assert _serve(transport, fresh, keys, data, state, privacy_budget=8.0).status() == 0
    assert "past its limit 8" in fresh.results[0].failure


# Issue 13, item 4: evaluation is gated by the client's policy --------------------------------------
def test_no_raw_evaluation_leaves_a_private_run_unless_the_policy_allows_it(
    tmp_path: Path, keys: KeySet, transport: InProcessTransport, data: Path
) -> None:
    server = FakeServer(description(privacy="central")).queue(task_stream("evaluate", 1, MODEL))
    assert _serve(transport, server, keys, data, tmp_path / "state").status() == 0
    (refused,) = server.results
    assert refused.failure.startswith("evaluate refused: the run is differentially private")
    assert (refused.num_examples, refused.loss, dict(refused.metrics)) == (0, 0.0, {})

    transport.stop()
    allowed = FakeServer(description(privacy="central")).queue(task_stream("evaluate", 1, MODEL))
    policy = _policy(sharing={"evaluation": "always"})
    assert _serve(transport, allowed, keys, data, tmp_path / "state", policy=policy).status() == 0
    assert allowed.results[0].num_examples > 0 and set(allowed.results[0].metrics) == {"accuracy"}


def test_a_client_that_refused_every_round_sends_no_raw_evaluation(
    tmp_path: Path, keys: KeySet, transport: InProcessTransport, data: Path
) -> None:
    # The server describes the run as not private and asks for no DP: a client with a budget
    # refuses to train, and then to evaluate.
    server = FakeServer(description(privacy="none")).queue(_fit(1), task_stream("evaluate", 1, MODEL))
    assert _serve(transport, server, keys, data, tmp_path / "state", privacy_budget=1.0).status() == 0
    fit, evaluation = server.results
    assert fit.delta is None and "not differentially private" in fit.failure
    assert evaluation.failure.startswith("evaluate refused") and evaluation.num_examples == 0


def test_only_the_metrics_the_policy_shares_leave(
    tmp_path: Path, keys: KeySet, transport: InProcessTransport, data: Path
) -> None:
    server = FakeServer(description()).queue(_fit(1), _fit(2, steps=["fednova"], train=TrainConfig(momentum=0.0)))
    assert _serve(transport, server, keys, data, tmp_path / "state").status() == 0
    plain, fednova = server.results
    assert set(plain.metrics) == {"train_loss"}  # the task also reports "steps"
    assert set(fednova.metrics) == {"train_loss", "fednova_norm"}  # the step it agreed to run reads "steps"


def test_rounds_strategies_client_steps_and_required_privacy_are_the_clients_to_agree_to(
    tmp_path: Path, keys: KeySet, transport: InProcessTransport, data: Path
) -> None:
    server = FakeServer(description(strategy="scaffold")).queue(_fit(1), _fit(2, steps=["scaffold"]), _fit(3))
    policy = _policy(training={"max_rounds": 2, "client_steps": []})
    assert _serve(transport, server, keys, data, tmp_path / "state", policy=policy).status() == 0
    one, two, three = server.results
    assert one.delta is not None  # no client step asked: the policy's empty list is no obstacle
    assert "client step(s) ['scaffold'] are not among those its policy runs" in two.failure
    assert "round 3 is past the 2 its policy trains in" in three.failure

    transport.stop()
    other = FakeServer(description(strategy="qfedavg"), run_id="run2").queue(_fit(1))
    policy = _policy(training={"strategies": ["fedavg"]})
    assert _serve(transport, other, keys, data, tmp_path / "state", policy=policy).status() == 0
    assert "strategy 'qfedavg' is not among ['fedavg']" in other.results[0].failure

    transport.stop()
    plain = FakeServer(description(), run_id="run3").queue(_fit(1))
    policy = _policy(privacy={"require": "central"})
    assert _serve(transport, plain, keys, data, tmp_path / "state", policy=policy).status() == 0
    assert "not differentially private and its policy asks for privacy.require=central" in plain.results[0].failure


def test_a_personalised_evaluation_sends_its_figures_and_no_update(
    tmp_path: Path, keys: KeySet, transport: InProcessTransport, data: Path
) -> None:
    asked = {"steps": ["finetune_evaluate"], "options": {"finetune_steps": 0}}
    server = FakeServer(description()).queue(_fit(1), _fit(1, **asked))  # the same round, after its training
    assert _serve(transport, server, keys, data, tmp_path / "state").status() == 0
    trained, personal = server.results
    assert trained.delta is not None and personal.delta is not None and not personal.failure
    assert all(not a.any() for a in personal.delta.values()) and personal.num_examples == 0 and not personal.extras
    assert set(personal.metrics) == {"eval_loss", "eval_examples", "eval_accuracy"}

    transport.stop()
    private = FakeServer(description(privacy="central"), run_id="run2").queue(_fit(1, **asked))
    assert _serve(transport, private, keys, data, tmp_path / "state").status() == 0
    assert private.results[0].failure.startswith("fit refused: the run is differentially private")


def test_a_client_that_requires_no_privacy_takes_part_in_a_clipping_only_run(
    tmp_path: Path, keys: KeySet, transport: InProcessTransport, data: Path
) -> None:
    clipping_only = {**CENTRAL, "dp_noise_multiplier": 0.0, CLIP_OPTION: 0.5}
    server = FakeServer(description(privacy="central")).queue(_fit(1, options=clipping_only, steps=["dp_clip"]))
    assert _serve(transport, server, keys, data, tmp_path / "state").status() == 0
    (update,) = server.results
    assert update.delta is not None and update.num_examples == 1  # clipped on the client, nothing charged
    norm = float(np.sqrt(sum(np.sum(a.astype(np.float64) ** 2) for a in update.delta.values())))
    assert norm <= 0.5 + 1e-6
