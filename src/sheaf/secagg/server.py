"""The server's side of SecAgg+, as a pure state machine: receive, then close each stage.

The server collects one kind of message per stage (:func:`server_receive`; anything else —
out of turn, from outside the cohort or the previous stage, twice, malformed — is refused
with :class:`~sheaf.core.errors.SecAggError` and changes nothing). When the stage's
deadline passes, :func:`server_close` fixes who got through and returns what to send each
of them next; a client that did not answer has dropped out. Five stages:

1. **keys** (U1): each client gets the keys of its neighbours in U1;
2. **shares** (U2): each gets the sealed shares its neighbours in U2 addressed to it; a
   client's shares must cover exactly its neighbours in U1;
3. **masked inputs** (U3): added up as they arrive (the server never keeps one alone);
   each client of U3 is sent U3;
4. **consistency signatures** (U4): each checked against the signer's advertised key;
   each client of U4 is sent U3 with the signatures;
5. **unmasking** (U5): for each survivor in U3, ``t`` shares of its self-mask seed remove
   ``PRG(b_v)``; for each client that dropped after sharing (U2 \\ U3) and has surviving
   neighbours, ``t`` shares of its mask key rebuild its X25519 key (checked against the key
   it advertised), from which the server recomputes and removes the pairwise masks its
   surviving neighbours added. The result is ``Σ_{u ∈ U3} x_u mod 2**b``.

A stage that ends with fewer than T clients, or an unmasking that cannot rebuild a needed
secret from t shares, **aborts**: the server stops and has learned nothing but masked
values (honest clients send unmasking shares only for a signed list of at least T).

Example:
    >>> from sheaf.secagg.setup import protocol_setup
    >>> setup = protocol_setup(range(4), instance=bytes(16), graph_seed=0, bits=16, length=2)
    >>> state, sent = server_close(start_server(setup))
    >>> state.stage.value, state.reason, sent
    ('aborted', 'only 0 clients advertised keys, fewer than the minimum of 3', {})

References:
    Bonawitz, Ivanov, Kreuter, Marcedone, McMahan, Patel, Ramage, Segal, Seth. Practical
    Secure Aggregation for Privacy-Preserving Machine Learning. CCS 2017. Bell, Bonawitz,
    Gascón, Lepoint, Raykova. Secure Single-Server Aggregation with (Poly)Logarithmic
    Overhead. CCS 2020.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import Enum

import numpy as np
import numpy.typing as npt
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from sheaf.core.errors import SecAggError
from sheaf.secagg.client import consistency_message, pairwise_seed
from sheaf.secagg.crypto import KEY_BYTES, add_mask, load_private, load_public, public_key_of, verify
from sheaf.secagg.messages import (
    AdvertiseKeys,
    ClientMessage,
    ConsistencyRequest,
    ConsistencySignature,
    EncryptedShare,
    ForwardedShares,
    MaskedInput,
    PeerKeys,
    ServerMessage,
    ShareKeys,
    UnmaskRequest,
    UnmaskShares,
    expect_turn,
)
from sheaf.secagg.setup import ProtocolSetup
from sheaf.secagg.shamir import combine_all, secret_from_bytes

__all__ = ["ServerStage", "ServerState", "server_close", "server_receive", "start_server"]

Ring = npt.NDArray[np.uint32]


class ServerStage(Enum):
    """Which messages the server is collecting; closing the stage moves it on."""

    #: Collecting AdvertiseKeys (U1).
    KEYS = "keys"
    #: Collecting ShareKeys (U2).
    SHARES = "shares"
    #: Collecting MaskedInput (U3), added up as they arrive.
    INPUTS = "inputs"
    #: Collecting ConsistencySignature (U4).
    SIGNATURES = "signatures"
    #: Collecting UnmaskShares (U5); closing it computes the sum.
    UNMASKING = "unmasking"
    #: The sum is in ``result``.
    DONE = "done"
    #: Stopped (``reason`` says why); nothing was revealed.
    ABORTED = "aborted"


@dataclass(frozen=True)
class ServerState:
    """The server's state in one protocol instance (returned by every call, never mutated).

    Attributes:
        setup: the instance's setup.
        stage: what it is collecting.
        keys: U1's advertised keys.
        shares: U2's sealed shares.
        survivors: U3, once the inputs stage is closed (while open: who sent one so far).
        signatures: U4's signatures.
        unmasking: U5's unmasking shares.
        result: the sum, once ``DONE``.
        reason: why it aborted.
    """

    setup: ProtocolSetup
    stage: ServerStage = ServerStage.KEYS
    keys: Mapping[int, AdvertiseKeys] = field(default_factory=dict)
    shares: Mapping[int, ShareKeys] = field(default_factory=dict)
    survivors: tuple[int, ...] = ()
    total: Ring | None = field(default=None, repr=False, compare=False)
    signatures: Mapping[int, ConsistencySignature] = field(default_factory=dict)
    unmasking: Mapping[int, UnmaskShares] = field(default_factory=dict)
    result: Ring | None = field(default=None, repr=False, compare=False)
    reason: str = ""


def start_server(setup: ProtocolSetup) -> ServerState:
    """The server of ``setup``, collecting keys."""
    return ServerState(setup)


def _expect(state: ServerState, message: ClientMessage, kind: type, stage: ServerStage, allowed: object) -> None:
    expect_turn(
        message,
        kind if state.stage is stage else None,
        state.setup.instance,
        out_of_turn=f"from client {message.client} while the server collects {state.stage.value}",
        sender=f"client {message.client}: ",
    )
    if message.client not in allowed:  # type: ignore[operator]
        raise SecAggError(f"client {message.client} is not in this stage of the protocol")


def server_receive(state: ServerState, message: ClientMessage) -> ServerState:
    """The state after accepting ``message`` in the current stage.

    Raises:
        SecAggError: if the message is refused (the sender is then treated as dropped).
    """
    setup, who = state.setup, message.client
    if isinstance(message, AdvertiseKeys):
        _expect(state, message, AdvertiseKeys, ServerStage.KEYS, set(setup.clients) - set(state.keys))
        if {len(message.cipher_key), len(message.mask_key), len(message.signing_key)} != {KEY_BYTES}:
            raise SecAggError(f"client {who}: public keys must be {KEY_BYTES} bytes")
        return dataclasses.replace(state, keys={**state.keys, who: message})
    if isinstance(message, ShareKeys):
        _expect(state, message, ShareKeys, ServerStage.SHARES, set(state.keys) - set(state.shares))
        wanted = [c for c in setup.neighbours(who) if c in state.keys]
        if sorted(s.recipient for s in message.shares) != wanted or any(s.sender != who for s in message.shares):
            raise SecAggError(f"client {who}: its shares must go to exactly its neighbours that advertised keys")
        return dataclasses.replace(state, shares={**state.shares, who: message})
    if isinstance(message, MaskedInput):
        _expect(state, message, MaskedInput, ServerStage.INPUTS, set(state.shares) - set(state.survivors))
        if message.bits != setup.bits or message.vector.shape != (setup.length,):
            raise SecAggError(f"client {who}: a masked input must be {setup.length} elements of Z_2^{setup.bits}")
        total = message.vector.astype(np.uint32) if state.total is None else state.total + message.vector
        return dataclasses.replace(state, survivors=(*state.survivors, who), total=total)
    if isinstance(message, ConsistencySignature):
        _expect(
            state, message, ConsistencySignature, ServerStage.SIGNATURES, set(state.survivors) - set(state.signatures)
        )
        verify(state.keys[who].signing_key, message.signature, consistency_message(setup.instance, state.survivors))
        return dataclasses.replace(state, signatures={**state.signatures, who: message})
    _expect(state, message, UnmaskShares, ServerStage.UNMASKING, set(state.signatures) - set(state.unmasking))
    held = {c for c in setup.neighbours(who) if c in state.shares}
    seeds, keys = {p for p, _ in message.seed_shares}, {p for p, _ in message.key_shares}
    alive = set(state.survivors)
    if len(seeds) != len(message.seed_shares) or len(keys) != len(message.key_shares):
        raise SecAggError(f"client {who}: unmasking shares repeat a peer")
    if not (seeds <= held & alive and keys <= held - alive):
        raise SecAggError(f"client {who}: unmasking shares for peers it does not hold, or of the wrong kind")
    for _, share in (*message.seed_shares, *message.key_shares):
        secret_from_bytes(share)
    return dataclasses.replace(state, unmasking={**state.unmasking, who: message})


def _abort(state: ServerState, reason: str) -> tuple[ServerState, dict[int, ServerMessage]]:
    return dataclasses.replace(state, stage=ServerStage.ABORTED, reason=reason, total=None), {}


def _shares_by_owner(state: ServerState) -> tuple[dict[int, dict[int, bytes]], dict[int, dict[int, bytes]]]:
    """The unmasking shares, indexed: owner -> {holder x-coordinate: share bytes}, seeds and keys."""
    seeds: dict[int, dict[int, bytes]] = {}
    keys: dict[int, dict[int, bytes]] = {}
    for responder, reply in state.unmasking.items():
        for peer, share in reply.seed_shares:
            seeds.setdefault(peer, {})[responder + 1] = share
        for peer, share in reply.key_shares:
            keys.setdefault(peer, {})[responder + 1] = share
    return seeds, keys


def _rebuild_all(wanted: list[int], shares: dict[int, dict[int, bytes]], threshold: int) -> dict[int, int | None]:
    """The secrets of ``wanted`` from their shares, together (one Lagrange basis per set of
    holders, :func:`~sheaf.secagg.shamir.combine_all`): each from the first ``threshold``
    by holder, as :func:`~sheaf.secagg.shamir.combine` takes them (only those are read as
    field elements; every share was checked to be one when it arrived). In the order of
    ``wanted``, up to and including the first with fewer than ``threshold`` shares (None),
    where the caller aborts, as it did when it rebuilt them one at a time."""
    points: dict[int, dict[int, int]] = {}
    for owner in wanted:
        held = shares.get(owner)
        if held is None or len(held) < threshold:
            break
        points[owner] = {x: secret_from_bytes(held[x]) for x in sorted(held)[:threshold]}
    values: dict[int, int | None] = dict(combine_all(points, threshold))
    if len(values) < len(wanted):
        values[wanted[len(values)]] = None
    return values


def _secret_bytes(value: int, owner: int) -> bytes:
    """A rebuilt secret as its 32 bytes.

    Raises:
        SecAggError: if the shares rebuilt a value out of range (they were not honest).
    """
    if value >= 1 << (8 * KEY_BYTES):
        raise SecAggError(f"the shares of client {owner}'s secret rebuild a value out of range")
    return value.to_bytes(KEY_BYTES, "big")


#: Below this many mask words to expand, unmasking stays on the calling thread.
_PARALLEL_WORDS = 1 << 22
#: Masks shorter than this (in 32-bit words, 1 MiB) stay on the calling thread: each mask
#: also costs a key agreement and HKDF, which hold the GIL, and with short masks the threads
#: wait on each other. Measured on 2 cores, quiet (n = 100, 30% dropouts, 2,170 masks): at
#: 10^5 words two threads took 0.36-0.38 s of wall time and 0.43-0.46 s of CPU against one
#: thread's 0.30 and 0.30; at 3·10^5, 0.56 s wall against 0.69; at 10^6, 1.20 s against 1.91
#: (docs/secure-aggregation.md).
_PARALLEL_MASK_WORDS = 1 << 18


def unmask_workers(jobs: int, length: int) -> int:
    """How many threads expand a round's unmasking masks: one per core (at most 8), or one
    when the work is too small to pay for threads — too few words in all, or masks too short
    (then the key agreements, which hold the GIL, dominate). OpenSSL's ciphers and NumPy's
    additions release the GIL, so long masks' threads run on separate cores."""
    if jobs * length < _PARALLEL_WORDS or length < _PARALLEL_MASK_WORDS:
        return 1
    return max(1, min(8, os.cpu_count() or 1, jobs))


#: One thread's unmasking work: self-mask seeds (subtracted), and dropped clients' rebuilt
#: keys, each with the partners (and their loaded public keys) whose masks it must remove.
_Work = tuple[list[bytes], list[tuple[X25519PrivateKey, int, list[tuple[int, X25519PublicKey]]]]]


def _expand(work: _Work, instance: bytes, length: int) -> npt.NDArray[np.uint32]:
    """The sum mod 2**32 of the masks of ``work``, to add to the masked total: minus each
    self mask; for each dropped client and surviving partner, minus the pairwise mask the
    partner added (its sign undone)."""
    seeds, dropped = work
    partial = np.zeros(length, np.uint32)
    for seed in seeds:
        add_mask(partial, seed, subtract=True)
    for key, owner, partners in dropped:
        for partner, public in partners:
            add_mask(partial, pairwise_seed(key, public, instance, owner, partner), subtract=partner < owner)
    return partial


def _unmask(state: ServerState, workers: int | None) -> tuple[ServerState, dict[int, ServerMessage]]:
    setup = state.setup
    assert state.total is not None
    alive = set(state.survivors)
    seed_shares, key_shares = _shares_by_owner(state)
    rebuilt = _rebuild_all(list(state.survivors), seed_shares, setup.threshold)
    seeds: list[bytes] = []
    for owner in state.survivors:
        value = rebuilt[owner]
        if value is None:
            return _abort(state, f"fewer than {setup.threshold} shares of survivor {owner}'s self mask arrived")
        seeds.append(_secret_bytes(value, owner))
    partners_of = {
        owner: [c for c in setup.neighbours(owner) if c in alive] for owner in sorted(set(state.shares) - alive)
    }
    needed = [owner for owner, partners in partners_of.items() if partners]
    keys = _rebuild_all(needed, key_shares, setup.threshold)
    publics: dict[int, X25519PublicKey] = {}  # each survivor's mask key, loaded once
    dropped: list[tuple[X25519PrivateKey, int, list[int]]] = []
    for owner in needed:
        value = keys[owner]
        if value is None:
            return _abort(state, f"fewer than {setup.threshold} shares of dropped client {owner}'s mask key arrived")
        key = load_private(_secret_bytes(value, owner))
        if public_key_of(key) != state.keys[owner].mask_key:
            return _abort(
                state, f"the shares of dropped client {owner}'s mask key do not rebuild the key it advertised"
            )
        for partner in partners_of[owner]:
            if partner not in publics:
                publics[partner] = load_public(state.keys[partner].mask_key)
        dropped.append((key, owner, partners_of[owner]))
    length = state.total.size
    jobs = len(seeds) + sum(len(partners) for _, _, partners in dropped)
    threads = unmask_workers(jobs, length) if workers is None else max(1, workers)
    # Addition mod 2**32 is associative and commutative: any split of the masks over threads
    # gives the same total, bit for bit (tested against one thread).
    work: list[_Work] = [
        (
            seeds[i::threads],
            [(key, owner, [(p, publics[p]) for p in partners[i::threads]]) for key, owner, partners in dropped],
        )
        for i in range(threads)
    ]
    total = state.total.copy()
    if threads == 1:
        total += _expand(work[0], setup.instance, length)
    else:
        with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="sheaf-unmask") as pool:
            for partial in pool.map(_expand, work, [setup.instance] * threads, [length] * threads):
                total += partial
    if setup.bits < 32:
        total &= np.uint32((1 << setup.bits) - 1)
    return dataclasses.replace(state, stage=ServerStage.DONE, result=total, total=None), {}


def server_close(state: ServerState, *, workers: int | None = None) -> tuple[ServerState, dict[int, ServerMessage]]:
    """Close the current stage: the next state and what to send each client that got through.

    ``workers`` threads expand the unmasking masks (None: :func:`unmask_workers` decides);
    the result is the same for any number.

    Example: see the module docstring.
    """
    setup, floor = state.setup, state.setup.min_survivors
    if state.stage is ServerStage.KEYS:
        if len(state.keys) < floor:
            return _abort(state, f"only {len(state.keys)} clients advertised keys, fewer than the minimum of {floor}")
        sent: dict[int, ServerMessage] = {
            c: PeerKeys(setup.instance, tuple(state.keys[p] for p in setup.neighbours(c) if p in state.keys))
            for c in sorted(state.keys)
        }
        return dataclasses.replace(state, stage=ServerStage.SHARES), sent
    if state.stage is ServerStage.SHARES:
        if len(state.shares) < floor:
            return _abort(state, f"only {len(state.shares)} clients shared keys, fewer than the minimum of {floor}")
        inbox: dict[int, list[EncryptedShare]] = {c: [] for c in state.shares}
        for sender in sorted(state.shares):
            for share in state.shares[sender].shares:
                if share.recipient in inbox:
                    inbox[share.recipient].append(share)
        sent = {c: ForwardedShares(setup.instance, tuple(inbox[c])) for c in sorted(inbox)}
        return dataclasses.replace(state, stage=ServerStage.INPUTS), sent
    if state.stage is ServerStage.INPUTS:
        if len(state.survivors) < floor:
            return _abort(
                state, f"only {len(state.survivors)} masked inputs arrived, fewer than the minimum of {floor}"
            )
        survivors = tuple(sorted(state.survivors))
        sent = {c: ConsistencyRequest(setup.instance, survivors) for c in survivors}
        return dataclasses.replace(state, stage=ServerStage.SIGNATURES, survivors=survivors), sent
    if state.stage is ServerStage.SIGNATURES:
        if len(state.signatures) < floor:
            return _abort(state, f"only {len(state.signatures)} survivors signed, fewer than the minimum of {floor}")
        signatures = tuple(state.signatures[c] for c in sorted(state.signatures))
        sent = {c: UnmaskRequest(setup.instance, state.survivors, signatures) for c in sorted(state.signatures)}
        return dataclasses.replace(state, stage=ServerStage.UNMASKING), sent
    if state.stage is ServerStage.UNMASKING:
        if len(state.unmasking) < floor:
            return _abort(
                state, f"only {len(state.unmasking)} clients sent unmasking shares, fewer than the minimum of {floor}"
            )
        return _unmask(state, workers)
    return state, {}
