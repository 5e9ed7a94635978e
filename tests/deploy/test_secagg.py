"""Secure aggregation over deployment: SecAgg+ between the server's backend and deployed clients.

Whole deployed runs in one process (the in-process transport; the wire, signatures and
checks are the real ones): the server sees only the survivors' sum, dropouts at every stage
are recovered, too few survivors abort the round with the store consistent, hostile
messages either way are refused, and a client's policy decides which noise it adds. A
client's connection is wrapped (:class:`_Tampered`) to make it drop out at a stage, to make
it a rogue that re-signs what it tampered with, or to tamper with what the server sends it.
The real-process test is in ``test_e2e.py``.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import dp_accounting
import numpy as np
import pytest
from dp_accounting import rdp

from sheaf.deploy import secure_round
from sheaf.deploy._proto import federation_pb2 as pb
from sheaf.deploy.auth import BodyDigest, load_identity
from sheaf.deploy.client_ledger import ClientLedger
from sheaf.deploy.inprocess import InProcessTransport
from sheaf.deploy.keys import KeySet
from sheaf.deploy.policy import ClientPolicy
from sheaf.deploy.rpc import Channel, Metadata, Requests, RpcError, StatusCode
from sheaf.deploy.status import run_status
from sheaf.deploy.transport import METHODS
from sheaf.evaluation.report import render_report
from sheaf.run.store import RunStore
from sheaf.secagg.accounting import rounded_sensitivity
from sheaf.secagg.messages import (
    AdvertiseKeys,
    ForwardedShares,
    ShareKeys,
    UnmaskRequest,
    decode_message,
    encode_message,
)
from sheaf.secagg.server import ServerStage, ServerState, server_close
from tests.deploy.conftest import (
    AllBack,
    client_files,
    deploy_config,
    events,
    simulate_inline,
    start_client,
    start_server,
)

#: Secure aggregation, short stages (round_timeout / 5 each after training).
SECURE = ["secagg.enabled=true", "rounds=1", "round_timeout=10"]
#: Which SecAgg request carries each stage's client message (``want`` of the request).
CARRIES = {"shares": 2, "input": 3, "signature": 4, "unmasking": 0}

Rewrite = Callable[[pb.SecAggRequest], pb.SecAggRequest | None]
Tamper = Callable[[pb.SecAggReply], pb.SecAggReply]


class _Tampered:
    """A client's channel with its SecAgg calls rewritten (None: the call fails, as a lost link)."""

    def __init__(
        self,
        inner: Channel,
        key: Path,
        rewrite: Rewrite | None = None,
        tamper: Tamper | None = None,
        result: Callable[[pb.Result], None] | None = None,
    ) -> None:
        self.inner, self.identity = inner, load_identity(key)
        self.rewrite, self.tamper, self.result = rewrite, tamper, result

    async def unary_unary(
        self, method: str, request: bytes, *, metadata: Metadata, timeout: float | None = None
    ) -> bytes:
        if method != METHODS["SecAgg"]:
            return await self.inner.unary_unary(method, request, metadata=metadata, timeout=timeout)
        if self.rewrite is not None:
            rewritten = self.rewrite(pb.SecAggRequest.FromString(request))
            if rewritten is None:
                raise RpcError(StatusCode.UNAVAILABLE, "dropped by the test")
            request = rewritten.SerializeToString()  # a rogue signs what it sends
            metadata = self.identity.sign(METHODS["SecAgg"], BodyDigest().update(request).digest())
        reply = await self.inner.unary_unary(method, request, metadata=metadata, timeout=timeout)
        return reply if self.tamper is None else self.tamper(pb.SecAggReply.FromString(reply)).SerializeToString()

    def unary_stream(
        self, method: str, request: bytes, *, metadata: Metadata, timeout: float | None = None
    ) -> AsyncIterator[bytes]:
        return self.inner.unary_stream(method, request, metadata=metadata, timeout=timeout)

    async def stream_unary(
        self, method: str, requests: Requests, *, metadata: Metadata, timeout: float | None = None
    ) -> bytes:
        if self.result is not None and isinstance(requests, list):  # a rogue rewrites its result's header
            first = pb.ResultMessage.FromString(requests[0])
            self.result(first.result)
            requests = [first.SerializeToString(), *requests[1:]]
            metadata = self.identity.sign(METHODS["PushResult"], BodyDigest().update(requests[0]).digest())
        return await self.inner.stream_unary(method, requests, metadata=metadata, timeout=timeout)

    async def close(self) -> None:
        await self.inner.close()


def _run(
    tmp_path: Path,
    keys: KeySet,
    transport: InProcessTransport,
    *extra: str,
    rewrites: dict[int, Rewrite] | None = None,
    tampers: dict[int, Tamper] | None = None,
    policies: dict[int, ClientPolicy] | None = None,
    results: dict[int, Callable[[pb.Result], None]] | None = None,
) -> tuple[RunStore, list[int | None]]:
    config = deploy_config(tmp_path, *SECURE, *extra)
    files = client_files(config, tmp_path / "data")
    server = start_server(config, keys, transport=transport)
    clients = []
    for i in range(4):
        rewrite, tamper, result = (rewrites or {}).get(i), (tampers or {}).get(i), (results or {}).get(i)
        connect = None
        if rewrite is not None or tamper is not None or result is not None:
            key = keys.client_keys[i]
            connect = lambda key=key, r=rewrite, t=tamper, f=result: _Tampered(transport.connect(), key, r, t, f)  # noqa: E731
        policy = (policies or {}).get(i, ClientPolicy())
        clients.append(
            start_client(transport, keys.client_keys[i], files[i], tmp_path / "s", connect=connect, policy=policy)
        )
    result = server.result()
    return RunStore.open(result.run_path, readonly=True), [c.status() for c in clients]


def _fit_failures(store: RunStore) -> dict[int, str]:
    return {c: reason for _, c, phase, reason in store.failures() if phase == "fit"}


def test_a_deployed_secure_run_gives_the_plain_model_within_the_quantisation_error_and_says_so(
    tmp_path: Path, keys: KeySet, transport: InProcessTransport
) -> None:
    store, statuses = _run(tmp_path, keys, transport, "rounds=3")

    assert statuses == [0, 0, 0, 0]
    plain = simulate_inline(deploy_config(tmp_path, "rounds=3", "name=plain")).params.flatten(np.float64)
    with store:
        history = store.history()
        deployed = store.params().flatten(np.float64)
        assert store.meta["secagg"]["noise"] == "secure"
    assert [(r.completed, r.fit["secagg_survivors"], r.fit["secagg_dropped"]) for r in history] == [(4, 4, 0)] * 3
    assert np.linalg.norm(deployed - plain) < 1e-4 * np.linalg.norm(plain)
    status = run_status(store.path)
    assert status["secure_aggregation"] is True and status["distributed_dp"] is False


def _drop_at(stage: str) -> Rewrite:
    want = CARRIES[stage]
    return lambda request: None if request.want == want and (request.message or want == 0) else request


@pytest.mark.parametrize(
    ("stage", "survivors"), [("keys", 3), ("shares", 3), ("input", 3), ("signature", 4), ("unmasking", 4)]
)
def test_a_client_that_drops_out_at_any_stage_is_recovered_over_the_transport(
    stage: str, survivors: int, tmp_path: Path, keys: KeySet, transport: InProcessTransport
) -> None:
    # Keys: client 3 refuses secure aggregation, so its keys never come; later stages: its
    # connection fails as it sends that stage's message (it stays in touch: the stage's
    # deadline, not its silence, lets the server go on).
    rewrites = {} if stage == "keys" else {3: _drop_at(stage)}
    policies = {3: ClientPolicy.from_dict({"secagg": {"accept": False}})} if stage == "keys" else {}

    store, statuses = _run(tmp_path, keys, transport, rewrites=rewrites, policies=policies)

    assert statuses == [0, 0, 0, 0]
    with store:
        (record,) = store.history()
        failures = _fit_failures(store)
    assert record.aggregated and record.fit["secagg_survivors"] == survivors
    assert record.completed == survivors
    if survivors == 3:  # its input is not in the sum: its failure says where it left
        expected = {
            "keys": "secure aggregation (secagg.accept=false)",
            "shares": "before sending its shares",
            "input": "before sending its masked input",
        }[stage]
        assert expected in failures[3]
    else:  # its input is in the sum: it counts as a contributor whatever came after
        assert failures == {}


def test_too_few_survivors_abort_the_round_with_nothing_revealed_and_the_store_consistent(
    tmp_path: Path, keys: KeySet, transport: InProcessTransport
) -> None:
    drop = _drop_at("input")
    store, statuses = _run(tmp_path, keys, transport, "rounds=2", rewrites={2: drop, 3: drop})

    assert statuses == [0, 0, 0, 0]
    with store:
        history = store.history()
        assert store.params(round=2).array_equal(store.params(round=0))
        failures = _fit_failures(store)
    assert [r.aggregated for r in history] == [False, False]
    assert all("secure aggregation aborted, nothing revealed: only 2 masked inputs arrived" in r.note for r in history)
    assert [r.completed for r in history] == [0, 0]
    assert "before sending its masked input" in failures[3]


def _in_the_name_of_client_0(request: pb.SecAggRequest) -> pb.SecAggRequest:
    if request.want == 2 and request.message:
        shares = decode_message(request.message)
        assert isinstance(shares, ShareKeys)
        request.message = encode_message(ShareKeys(shares.instance, 0, shares.shares))
    return request


def _oversized(request: pb.SecAggRequest) -> pb.SecAggRequest:
    if request.want == 3 and request.message:
        request.message = request.message + bytes(1 << 20)
    return request


@pytest.mark.parametrize(
    ("rogue", "reason"),
    [
        (_in_the_name_of_client_0, "client 3 sent a message in the name of client 0"),
        (_oversized, "a MaskedInput message of this protocol is at most"),
    ],
)
def test_a_rogue_clients_message_is_refused_and_the_round_goes_on_without_it(
    rogue: Rewrite, reason: str, tmp_path: Path, keys: KeySet, transport: InProcessTransport,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    caplog.set_level(logging.INFO, logger="sheaf")
    store, statuses = _run(tmp_path, keys, transport, rewrites={3: rogue})

    assert statuses == [0, 0, 0, 0]
    with store:
        (record,) = store.history()
        failures = _fit_failures(store)
    assert record.aggregated and record.fit["secagg_survivors"] == 3
    assert reason in failures[3]
    assert any(reason in e["reason"] for e in events(caplog, "secagg_refused"))


def _keys_in_the_name_of_client_0(header: pb.Result) -> None:
    if header.secagg:
        keys = decode_message(header.secagg)
        assert isinstance(keys, AdvertiseKeys)
        header.secagg = encode_message(dataclasses.replace(keys, client=0))


def test_a_clients_keys_are_bound_to_its_authenticated_channel(
    tmp_path: Path, keys: KeySet, transport: InProcessTransport
) -> None:
    # Client 3 advertises keys in client 0's name (its signed result stream is its own): the
    # server refuses them, so it could never sign or unmask as client 0.
    store, statuses = _run(tmp_path, keys, transport, results={3: _keys_in_the_name_of_client_0})

    assert statuses == [0, 0, 0, 0]
    with store:
        (record,) = store.history()
        failures = _fit_failures(store)
    assert failures == {3: "secure aggregation refused its keys: client 3 advertised keys in the name of client 0"}
    assert record.aggregated and record.fit["secagg_survivors"] == 3


def _oversized_reply(reply: pb.SecAggReply) -> pb.SecAggReply:
    if reply.message and isinstance(decode_message(reply.message), ForwardedShares):
        reply.message = reply.message + bytes(1 << 20)
    return reply


def _asks_for_both_shares(reply: pb.SecAggReply) -> pb.SecAggReply:
    # A server that drops a survivor from the signed list to get the shares of its mask key
    # as well as those of its self mask: the list no longer matches the signatures.
    if reply.message:
        message = decode_message(reply.message)
        if isinstance(message, UnmaskRequest):
            survivors = message.survivors[1:]
            reply.message = encode_message(UnmaskRequest(message.instance, survivors, message.signatures))
    return reply


@pytest.mark.parametrize(
    ("tamper", "reason", "survivors"),
    [
        (_asks_for_both_shares, "names other survivors than the list I signed", 4),
        (_oversized_reply, "more than the", 3),
    ],
)
def test_a_client_refuses_a_hostile_server_message_and_reveals_nothing_more(
    tamper: Tamper, reason: str, survivors: int, tmp_path: Path, keys: KeySet, transport: InProcessTransport,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    caplog.set_level(logging.INFO, logger="sheaf")
    store, statuses = _run(tmp_path, keys, transport, tampers={3: tamper})

    assert statuses == [0, 0, 0, 0]
    refused = [e for e in events(caplog, "secagg_refused") if e["round"] == 1]
    assert len(refused) == 1 and reason in refused[0]["reason"]
    with store:
        (record,) = store.history()
    # The others' shares suffice: with its input in the sum (refused at unmasking), or without.
    assert record.aggregated and record.fit["secagg_survivors"] == survivors


def test_a_client_is_not_tricked_into_adding_no_noise_when_its_policy_demands_dp(
    tmp_path: Path, keys: KeySet, transport: InProcessTransport
) -> None:
    # The server runs secure aggregation without distributed noise; client 0's policy
    # requires differential privacy.
    policies = {0: ClientPolicy.from_dict({"privacy": {"require": "central"}})}
    store, statuses = _run(tmp_path, keys, transport, policies=policies)

    assert statuses == [0, 0, 0, 0]
    with store:
        (record,) = store.history()
        failures = _fit_failures(store)
    assert "fit refused: the round is not differentially private" in failures[0]
    assert record.fit["secagg_survivors"] == 3


#: Distributed DP: every client each round (Poisson, q = 1), its share of the noise for z = 1.
DISTRIBUTED = ["sampling=poisson", "secagg.dp=distributed", "privacy.noise_multiplier=1", "privacy.clip=1"]


def test_distributed_dp_over_deployment_accounts_the_surviving_noise_and_clients_charge_their_ledgers(
    tmp_path: Path, keys: KeySet, transport: InProcessTransport
) -> None:
    # Client 0 requires differential privacy: it takes part, with secure noise, and charges
    # its own ledger for the T - 1 other shares a sum it helps unmask holds at least.
    policies = {0: ClientPolicy.from_dict({"privacy": {"require": "central", "budget": 1e6}})}
    store, statuses = _run(tmp_path, keys, transport, "rounds=2", *DISTRIBUTED, policies=policies)

    assert statuses == [0, 0, 0, 0]
    with store:
        history = store.history()
        meta = store.meta
    assert [r.fit["secagg_survivors"] for r in history] == [4, 4]
    assert all(r.aggregated for r in history)
    assert meta["secagg"]["dp"] == "distributed" and meta["secagg"]["noise"] == "secure"
    epsilons = [r.privacy["epsilon"] for r in history]
    assert 0 < epsilons[0] < epsilons[1] < float("inf")
    assert history[-1].privacy["epsilon_server"] >= epsilons[1]
    status = run_status(store.path)
    assert status["distributed_dp"] is True and status["privacy"]["epsilon"] == epsilons[1]
    page = render_report("secure", meta, history, [], 0, tmp_path / "report")[-1].read_text()
    assert "secure aggregation" in page and "SecAgg+" in page and "distributed DP" in page
    # Its ledger: the Gaussian bound (Kairouz et al., Prop. 14) of m = T - 1 = 2 shares, per
    # round, charged as local noise is (replace-one: half the multiplier; no amplification).
    plan = meta["secagg"]
    l2, _ = rounded_sensitivity(plan["scale"] * plan["clip"], plan["padded_length"])
    sigma2 = plan["noise_variance"]
    tau = 10 * math.exp(-2 * math.pi**2 * sigma2 / 2)
    z = 1 / (l2 / math.sqrt(2 * sigma2) + tau * math.sqrt(plan["padded_length"]))
    event = dp_accounting.SelfComposedDpEvent(dp_accounting.GaussianDpEvent(z / 2), 2)
    expected = rdp.RdpAccountant().compose(event).get_epsilon(1e-5)
    ledger = ClientLedger(tmp_path / "s" / f"ledger-{load_identity(keys.client_keys[0]).key_id}.json")
    assert ledger.epsilon(1e-5) == pytest.approx(expected, rel=1e-9)


def test_central_dp_clipped_on_the_clients_runs_through_secure_aggregation_over_deployment(
    tmp_path: Path, keys: KeySet, transport: InProcessTransport
) -> None:
    # The server noises the unmasked sum; a client requiring DP accepts the declared central
    # release, and clips inside its encoding (as in simulation), so the sum moves by at most C each.
    central = ["sampling=poisson", "privacy.mode=central", "privacy.clipping=client", "privacy.noise_multiplier=1"]
    policies = {0: ClientPolicy.from_dict({"privacy": {"require": "central"}})}
    store, statuses = _run(tmp_path, keys, transport, *central, policies=policies)

    assert statuses == [0, 0, 0, 0]
    with store:
        (record,) = store.history()
        assert _fit_failures(store) == {}
    assert record.aggregated and record.fit["secagg_survivors"] == 4
    assert 0 < record.privacy["epsilon"] < float("inf")


def test_a_server_killed_between_key_sharing_and_unmasking_resumes_with_nothing_revealed(
    tmp_path: Path, keys: KeySet, transport: InProcessTransport, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The server dies as it closes the signatures stage of round 1: the clients have shared
    # their keys and sent their masked inputs, nobody has been asked to unmask. The same
    # command resumes the run: round 1 starts a new instance, which the clients refuse to
    # train a second time for, so it is skipped; round 2 runs through secure aggregation.
    died = threading.Event()

    def close_or_die(state: ServerState, **options: Any) -> Any:
        if state.stage is ServerStage.SIGNATURES and not died.is_set():
            died.set()
            raise RuntimeError("killed mid-protocol")
        return server_close(state, **options)

    monkeypatch.setattr(secure_round, "server_close", close_or_die)
    sent: list[list[tuple[bytes, str]]] = [[] for _ in range(4)]

    def recording(i: int) -> Rewrite:
        def record(request: pb.SecAggRequest) -> pb.SecAggRequest:
            if request.message:
                message = decode_message(request.message)
                sent[i].append((message.instance, type(message).__name__))
            return request

        return record

    def connector(i: int) -> Callable[[], _Tampered]:
        key, rewrite = keys.client_keys[i], recording(i)
        return lambda: _Tampered(transport.connect(), key, rewrite)

    config = deploy_config(tmp_path, *SECURE, "rounds=2")
    files = client_files(config, tmp_path / "data")
    first = start_server(config, keys, transport=transport)
    clients = [
        start_client(transport, keys.client_keys[i], files[i], tmp_path / "s", connect=connector(i)) for i in range(4)
    ]
    with pytest.raises(RuntimeError, match="killed mid-protocol"):
        first.result()
    killed = {instance for messages in sent for instance, _ in messages}
    assert len(killed) == 1  # one instance ran, and every client got as far as its masked input ...
    assert all(("MaskedInput" in {kind for _, kind in messages}) for messages in sent)
    # ... and nobody sent an unmasking share of it: the server holds masked values only.
    assert not any(kind == "UnmaskShares" for messages in sent for _, kind in messages)

    again = start_server(config, keys, transport=transport, listener=AllBack(transport, 4))  # the same command
    result = again.result()

    assert [c.status() for c in clients] == [0, 0, 0, 0]
    (instance,) = killed
    assert not any(kind == "UnmaskShares" for messages in sent for i, kind in messages if i == instance)
    with RunStore.open(result.run_path, readonly=True) as store:
        history = store.history()
        assert store.params(round=1).array_equal(store.params(round=0))  # round 1 changed nothing
        failures = _fit_failures(store)
    assert [r.round for r in history] == [1, 2]
    assert not history[0].aggregated and history[1].aggregated
    assert history[1].fit["secagg_survivors"] == 4
    assert len(failures) == 4 and all("round 1" in reason for reason in failures.values()), failures
