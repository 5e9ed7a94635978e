"""Running SecAgg+ in one process: the real protocol, and an exact stand-in for it.

:func:`run_protocol` is a transport that only moves messages: it starts every client's
state machine (:mod:`sheaf.secagg.client`) and the server's (:mod:`sheaf.secagg.server`),
carries each message as bytes (encoded, counted, decoded — the very bytes a network
transport would carry), and closes each stage once every client has answered or dropped
out. ``dropouts`` says which client goes silent at which stage (it never sends that
stage's message), so every dropout pattern can be replayed; it reports the traffic and
the CPU seconds each side spent (what the work costs, whatever else shares the machine:
a client's thread time; the server's process time while it closes a stage, which counts
the threads that expand the unmasking masks in parallel) and the server's wall seconds.

:func:`exact_protocol` is the fast stand-in for simulations: the same rules on the sets
of clients (who gets through each stage, which client refuses to go on, when the server
aborts), with no cryptography, so its sum is the plain ring sum of the survivors' inputs.
The two agree bit for bit on every outcome (``tests/secagg/test_driver.py``): the real
protocol's masks cancel exactly.

Example:
    >>> import numpy as np
    >>> from sheaf.secagg.setup import protocol_setup
    >>> setup = protocol_setup(range(5), instance=bytes(16), graph_seed=1, bits=16, length=3)
    >>> inputs = {c: np.full(3, c, np.uint32) for c in range(5)}
    >>> outcome = run_protocol(setup, inputs, {4: Stage.INPUT})
    >>> outcome.survivors, outcome.total.tolist(), outcome.reason
    ((0, 1, 2, 3), [6, 6, 6], '')
    >>> exact_protocol(setup, inputs, {4: Stage.INPUT}).total.tolist()
    [6, 6, 6]
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import IntEnum

import numpy as np
import numpy.typing as npt

from sheaf.core.errors import SecAggError
from sheaf.quantize.quantizer import ring_sum
from sheaf.secagg.client import ClientStage, ClientState, client_step, start_client
from sheaf.secagg.messages import ClientMessage, ServerMessage, decode_message, encode_message
from sheaf.secagg.server import ServerStage, server_close, server_receive, start_server
from sheaf.secagg.setup import ProtocolSetup

__all__ = ["ProtocolOutcome", "Stage", "exact_protocol", "run_protocol"]

Ring = npt.NDArray[np.uint32]


class Stage(IntEnum):
    """The client messages of the protocol, in order: a dropout never sends the one it is at."""

    KEYS = 1
    SHARES = 2
    INPUT = 3
    SIGNATURE = 4
    UNMASKING = 5


_NAMES = {
    Stage.KEYS: "its keys",
    Stage.SHARES: "its shares",
    Stage.INPUT: "its masked input",
    Stage.SIGNATURE: "its consistency signature",
    Stage.UNMASKING: "its unmasking shares",
}


@dataclass(frozen=True)
class ProtocolOutcome:
    """What one run of the protocol gave.

    Attributes:
        survivors: the clients whose inputs the sum holds (U3; empty if it aborted first).
        total: their sum in Z_{2^bits} (None if the protocol aborted).
        reason: why the server aborted (empty if it did not).
        failures: the clients that dropped out or refused to go on, with why.
        uploaded: bytes each client sent.
        downloaded: bytes each client received.
        client_seconds: CPU seconds each client computed (its steps, encoding and decoding).
        server_seconds: CPU seconds the server computed (all its threads).
        server_wall_seconds: wall seconds the server took (its unmasking runs on several cores).
    """

    survivors: tuple[int, ...]
    total: Ring | None = field(repr=False)
    reason: str
    failures: Mapping[int, str]
    uploaded: Mapping[int, int] = field(default_factory=dict)
    downloaded: Mapping[int, int] = field(default_factory=dict)
    client_seconds: Mapping[int, float] = field(default_factory=dict)
    server_seconds: float = 0.0
    server_wall_seconds: float = 0.0

    @property
    def aborted(self) -> bool:
        """Whether the protocol stopped without a sum."""
        return self.total is None


def _dropped(stage: Stage) -> str:
    return f"dropped out before sending {_NAMES[stage]}"


def run_protocol(
    setup: ProtocolSetup,
    inputs: Mapping[int, Ring],
    dropouts: Mapping[int, Stage] | None = None,
    *,
    workers: int | None = None,
) -> ProtocolOutcome:
    """Run SecAgg+ among ``setup.clients`` holding ``inputs``, every message as bytes.

    Args:
        setup: the instance (cohort, graph, thresholds, ring).
        inputs: each client's ring vector.
        dropouts: the stage at which a client goes silent (absent: it never does).
        workers: threads for the server's unmasking (None: the server decides); the sum is
            the same for any number.

    Raises:
        SecAggError: if an input is missing or not a ring vector of the setup's length.
    """
    drop = {c: int(s) for c, s in (dropouts or {}).items()}
    failures: dict[int, str] = {}
    uploaded = dict.fromkeys(setup.clients, 0)
    downloaded = dict.fromkeys(setup.clients, 0)
    client_seconds = dict.fromkeys(setup.clients, 0.0)
    server_seconds = server_wall = 0.0
    server = start_server(setup)
    clients: dict[int, ClientState] = {}

    def deliver(client: int, message: ClientMessage) -> None:
        nonlocal server, server_seconds, server_wall
        started = time.thread_time()
        data = encode_message(message)
        client_seconds[client] += time.thread_time() - started
        uploaded[client] += len(data)
        started, wall = time.thread_time(), time.perf_counter()
        try:
            received = decode_message(data)
            if not isinstance(received, type(message)):
                raise SecAggError("message changed type on the wire")
            server = server_receive(server, received)
        except SecAggError as exc:
            failures[client] = f"refused by the server: {exc}"
        server_seconds += time.thread_time() - started
        server_wall += time.perf_counter() - wall

    for client in setup.clients:
        if drop.get(client, math.inf) <= Stage.KEYS:
            failures[client] = _dropped(Stage.KEYS)
            continue
        started = time.thread_time()
        clients[client], advert = start_client(setup, client, inputs[client])
        client_seconds[client] += time.thread_time() - started
        deliver(client, advert)

    for stage in (Stage.SHARES, Stage.INPUT, Stage.SIGNATURE, Stage.UNMASKING, None):
        started, wall = time.process_time(), time.perf_counter()  # process: the unmasking threads too
        server, outbox = server_close(server, workers=workers)
        encoded = {c: encode_message(m) for c, m in outbox.items()}
        server_seconds += time.process_time() - started
        server_wall += time.perf_counter() - wall
        if server.stage in (ServerStage.ABORTED, ServerStage.DONE) or stage is None:
            break
        for client, data in encoded.items():
            downloaded[client] += len(data)
            if drop.get(client, math.inf) <= stage:
                failures.setdefault(client, _dropped(stage))
                continue
            started = time.thread_time()
            message: ServerMessage = decode_message(data)  # type: ignore[assignment]
            clients[client], reply = client_step(clients[client], message)
            client_seconds[client] += time.thread_time() - started
            if reply is None:
                failures[client] = f"refused to go on: {clients[client].reason}"
                continue
            deliver(client, reply)
    for client, state in clients.items():
        if state.stage is ClientStage.ABORTED:
            failures.setdefault(client, f"refused to go on: {state.reason}")
    total = server.result if server.stage is ServerStage.DONE else None
    return ProtocolOutcome(
        tuple(sorted(server.survivors)) if server.stage is not ServerStage.ABORTED or server.survivors else (),
        total,
        server.reason,
        dict(sorted(failures.items())),
        uploaded,
        downloaded,
        client_seconds,
        server_seconds,
        server_wall,
    )


def exact_protocol(
    setup: ProtocolSetup, inputs: Mapping[int, Ring], dropouts: Mapping[int, Stage] | None = None
) -> ProtocolOutcome:
    """The outcome :func:`run_protocol` gives, from the same rules on sets, without cryptography.

    The same survivors, the same abort reason, the same sum; clients that refuse to go on
    refuse for the same reasons. No traffic or time is reported.
    """
    drop = {c: int(s) for c, s in (dropouts or {}).items()}
    t, floor = setup.threshold, setup.min_survivors
    failures: dict[int, str] = {}

    def stays(client: int, stage: Stage) -> bool:
        if drop.get(client, math.inf) <= stage:
            failures.setdefault(client, _dropped(stage))
            return False
        return True

    def aborted(reason: str, survivors: tuple[int, ...] = ()) -> ProtocolOutcome:
        return ProtocolOutcome(survivors, None, reason, dict(sorted(failures.items())))

    near = {c: set(setup.neighbours(c)) for c in setup.clients}
    advertised = {c for c in setup.clients if stays(c, Stage.KEYS)}
    if len(advertised) < floor:
        return aborted(f"only {len(advertised)} clients advertised keys, fewer than the minimum of {floor}")
    shared = set()
    for c in sorted(advertised):
        if not stays(c, Stage.SHARES):
            continue
        peers = near[c] & advertised
        if len(peers) < t:
            failures[c] = f"refused to go on: only {len(peers)} of my neighbours advertised keys; my secrets need {t}"
            continue
        shared.add(c)
    if len(shared) < floor:
        return aborted(f"only {len(shared)} clients shared keys, fewer than the minimum of {floor}")
    masked = set()
    for c in sorted(shared):
        if not stays(c, Stage.INPUT):
            continue
        held = near[c] & shared
        if len(held) < t:
            failures[c] = f"refused to go on: only {len(held)} of my neighbours shared their keys; at least {t} must"
            continue
        masked.add(c)
    survivors = tuple(sorted(masked))
    if len(masked) < floor:
        return aborted(f"only {len(masked)} masked inputs arrived, fewer than the minimum of {floor}", survivors)
    signed = {c for c in survivors if stays(c, Stage.SIGNATURE)}
    if not setup.connected(survivors):
        for c in sorted(signed):
            failures[c] = (
                "refused to go on: the survivors fall apart into pieces of the neighbour graph; "
                "the sum of a piece would be revealed"
            )
        signed = set()
    if len(signed) < floor:
        return aborted(f"only {len(signed)} survivors signed, fewer than the minimum of {floor}", survivors)
    answered = {c for c in sorted(signed) if stays(c, Stage.UNMASKING)}
    if len(answered) < floor:
        return aborted(
            f"only {len(answered)} clients sent unmasking shares, fewer than the minimum of {floor}", survivors
        )
    for owner in survivors:
        if len(near[owner] & answered) < t:
            return aborted(f"fewer than {t} shares of survivor {owner}'s self mask arrived", survivors)
    for owner in sorted(shared - masked):
        if near[owner] & masked and len(near[owner] & answered) < t:
            return aborted(f"fewer than {t} shares of dropped client {owner}'s mask key arrived", survivors)
    total = ring_sum([inputs[c] for c in survivors], setup.bits)
    return ProtocolOutcome(survivors, total, "", dict(sorted(failures.items())))
