"""The client's side of SecAgg+, as a pure state machine: ``(state, message) -> (state, reply)``.

A client holds one input (a vector in Z_{2^b}) and, for one protocol instance, moves
through named stages; each server message it accepts moves it on by one and produces the
one message it sends next (:func:`client_step`). Anything it cannot accept — a message out
of turn, for another instance, forged, or asking it to break the protocol's rules — moves
it to ``ABORTED`` with the reason, and it sends nothing more. A transport only moves the
messages (:mod:`sheaf.secagg.driver` in one process; the deployment's gRPC later).

What the client sends, and why it is safe (Bonawitz et al. 2017, with Bell et al.'s
neighbourhoods):

1. **advertise keys** (:func:`start_client`): three fresh public keys — X25519 for sealing
   shares, X25519 for pairwise masks, Ed25519 for the consistency signature;
2. **share keys**, on its neighbours' keys: Shamir shares (threshold t) of its self-mask
   seed ``b`` (256 random bits) and of its pairwise mask key, one pair per neighbour,
   sealed with ChaCha20-Poly1305 under a key only that neighbour can derive — the server
   routes them but cannot read them. It refuses if fewer than t neighbours advertised;
3. **masked input**, on the shares its neighbours sent it: ``y = x + PRG(b) + Σ_{v > u}
   PRG(s_uv) - Σ_{v < u} PRG(s_uv)`` mod ``2**b``, over the neighbours ``v`` that shared
   (``s_uv`` from X25519 + HKDF; PRG is AES-256-CTR). Every pairwise mask appears once with
   each sign in the sum and cancels; ``PRG(b)`` hides ``x`` even from a server that later
   learns ``s_u``. It refuses if fewer than t neighbours shared;
4. **consistency check**, on the list of survivors: it signs (instance, survivors), after
   checking that the sum will hold at least T inputs, that every surviving neighbour is
   one that shared with it, and that the survivors are one connected piece of the
   neighbour graph (else the masks of each piece cancel within it, and the server would
   learn each piece's sum);
5. **unmasking**, on the signed survivors list: it checks the list is the one it signed and
   the neighbours' signatures on it, then sends, for each neighbour that shared, the share
   of its self-mask seed if it survived, or of its mask key if it dropped out — **never
   both for the same peer**: the lists partition its neighbours, and a second unmasking
   request is refused (the client is then ``DONE``).

Example:
    >>> import numpy as np
    >>> from sheaf.secagg.setup import protocol_setup
    >>> setup = protocol_setup(range(3), instance=bytes(16), graph_seed=0, bits=16, length=4)
    >>> state, advert = start_client(setup, 1, np.zeros(4, np.uint32))
    >>> state.stage, advert.client, len(advert.mask_key)
    (<ClientStage.ADVERTISED: 'advertised'>, 1, 32)

References:
    Bonawitz, Ivanov, Kreuter, Marcedone, McMahan, Patel, Ramage, Segal, Seth. Practical
    Secure Aggregation for Privacy-Preserving Machine Learning. CCS 2017. Bell, Bonawitz,
    Gascón, Lepoint, Raykova. Secure Single-Server Aggregation with (Poly)Logarithmic
    Overhead. CCS 2020.
"""

from __future__ import annotations

import dataclasses
import os
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum

import numpy as np
import numpy.typing as npt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from sheaf.core.errors import SecAggError
from sheaf.secagg.crypto import (
    KEY_BYTES,
    add_mask,
    agree,
    derive_key,
    generate_keypair,
    generate_signing_keypair,
    open_sealed,
    private_bytes,
    seal,
    sign,
    verify,
)
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
from sheaf.secagg.shamir import secret_from_bytes, secret_to_bytes, split

__all__ = [
    "ClientStage",
    "ClientState",
    "client_step",
    "consistency_message",
    "pair_context",
    "pairwise_seed",
    "share_key",
    "start_client",
]

Ring = npt.NDArray[np.uint32]


class ClientStage(Enum):
    """Where a client is in one protocol instance, and what moves it on."""

    #: Sent its public keys; its neighbours' keys (PeerKeys) move it on.
    ADVERTISED = "advertised"
    #: Sent its sealed shares; the shares addressed to it (ForwardedShares) move it on.
    SHARED = "shared"
    #: Sent its masked input; the survivors list (ConsistencyRequest) moves it on.
    MASKED = "masked"
    #: Signed the survivors; the signed list (UnmaskRequest) moves it on.
    SIGNED = "signed"
    #: Sent its unmasking shares: nothing moves it any more.
    DONE = "done"
    #: Refused a message (``reason`` says why): sends nothing more.
    ABORTED = "aborted"


@dataclass(frozen=True)
class _Secrets:
    cipher: X25519PrivateKey
    mask: X25519PrivateKey
    signing: Ed25519PrivateKey
    seed: bytes


@dataclass(frozen=True)
class ClientState:
    """One client's state in one protocol instance (returned by every step, never mutated).

    Attributes:
        setup: the instance's setup.
        client: this client's id.
        stage: where it is.
        keys: the public keys it advertised.
        peers: the neighbours that advertised, with their keys.
        sealing: the key sealing the shares exchanged with each of those neighbours.
        held: for each neighbour that shared with it, the (seed share, key share) it holds.
        survivors: the survivors list it signed.
        reason: why it aborted (empty otherwise).
    """

    setup: ProtocolSetup
    client: int
    stage: ClientStage
    keys: AdvertiseKeys
    secrets: _Secrets = field(repr=False)
    input: Ring | None = field(default=None, repr=False, compare=False)
    peers: Mapping[int, AdvertiseKeys] = field(default_factory=dict)
    sealing: Mapping[int, bytes] = field(default_factory=dict, repr=False)
    held: Mapping[int, tuple[int, int]] = field(default_factory=dict, repr=False)
    survivors: tuple[int, ...] = ()
    reason: str = ""


def pair_context(instance: bytes, a: int, b: int) -> bytes:
    """What binds a pairwise key to its instance and its (unordered) pair of clients."""
    low, high = sorted((a, b))
    return instance + struct.pack(">QQ", low, high)


def pairwise_seed(
    mask_private: X25519PrivateKey, peer_mask_key: bytes | X25519PublicKey, instance: bytes, me: int, peer: int
) -> bytes:
    """The 256-bit seed of the pairwise mask of ``me`` and ``peer`` (the same from either side)."""
    return derive_key(agree(mask_private, peer_mask_key), b"pairwise-mask", pair_context(instance, me, peer))


def share_key(cipher_private: X25519PrivateKey, peer_cipher_key: bytes, instance: bytes, me: int, peer: int) -> bytes:
    """The key sealing the shares ``me`` and ``peer`` send each other."""
    return derive_key(agree(cipher_private, peer_cipher_key), b"share-encryption", pair_context(instance, me, peer))


def _associated(instance: bytes, sender: int, recipient: int) -> bytes:
    return instance + struct.pack(">QQ", sender, recipient)


def consistency_message(instance: bytes, survivors: tuple[int, ...]) -> bytes:
    """What each client signs in the consistency check."""
    return b"sheaf-secagg/consistency" + instance + struct.pack(f">{len(survivors)}Q", *survivors)


def start_client(setup: ProtocolSetup, client: int, vector: Ring) -> tuple[ClientState, AdvertiseKeys]:
    """A client of ``setup`` holding ``vector``, with fresh keys, and its first message.

    Raises:
        SecAggError: if the client is not in the cohort or the vector is not in the ring.
    """
    setup.neighbours(client)  # raises for a client outside the cohort
    if vector.shape != (setup.length,) or vector.dtype != np.uint32:
        raise SecAggError(f"client {client}: input must be {setup.length} uint32 ring elements, got {vector.shape}")
    if setup.bits < 32 and vector.size and int(vector.max()) >= 1 << setup.bits:
        raise SecAggError(f"client {client}: input holds values outside Z_2^{setup.bits}")
    cipher_private, cipher_public = generate_keypair()
    mask_private, mask_public = generate_keypair()
    signing_private, signing_public = generate_signing_keypair()
    keys = AdvertiseKeys(setup.instance, client, cipher_public, mask_public, signing_public)
    secrets = _Secrets(cipher_private, mask_private, signing_private, os.urandom(KEY_BYTES))
    return ClientState(setup, client, ClientStage.ADVERTISED, keys, secrets, vector), keys


def _share(state: ClientState, message: PeerKeys) -> tuple[ClientState, ShareKeys]:
    setup, me = state.setup, state.client
    neighbours = set(setup.neighbours(me))
    peers = {keys.client: keys for keys in message.keys}
    if len(peers) != len(message.keys) or not set(peers) <= neighbours:
        raise SecAggError("the server sent keys of clients that are not my neighbours, or twice")
    advertised = [(k.cipher_key, k.mask_key, k.signing_key) for k in (*peers.values(), state.keys)]
    if any(k.instance != setup.instance for k in peers.values()) or len(
        {key for trio in advertised for key in trio}
    ) != 3 * len(advertised):
        raise SecAggError("the server sent keys of another instance, or keys that repeat")
    if len(peers) < setup.threshold:
        raise SecAggError(f"only {len(peers)} of my neighbours advertised keys; my secrets need {setup.threshold}")
    holders = [peer + 1 for peer in sorted(peers)]
    seed_shares = split(int.from_bytes(state.secrets.seed, "big"), setup.threshold, holders)
    key_shares = split(int.from_bytes(private_bytes(state.secrets.mask), "big"), setup.threshold, holders)
    sealed = []
    sealing = {}
    for peer in sorted(peers):
        key = sealing[peer] = share_key(state.secrets.cipher, peers[peer].cipher_key, setup.instance, me, peer)
        plain = (
            struct.pack(">QQ", me, peer)
            + secret_to_bytes(seed_shares[peer + 1])
            + secret_to_bytes(key_shares[peer + 1])
        )
        sealed.append(EncryptedShare(me, peer, seal(key, plain, _associated(setup.instance, me, peer))))
    next_state = dataclasses.replace(state, stage=ClientStage.SHARED, peers=peers, sealing=sealing)
    return next_state, ShareKeys(setup.instance, me, tuple(sealed))


def _mask(state: ClientState, message: ForwardedShares) -> tuple[ClientState, MaskedInput]:
    setup, me = state.setup, state.client
    held: dict[int, tuple[int, int]] = {}
    for share in message.shares:
        if share.recipient != me or share.sender not in state.peers or share.sender in held:
            raise SecAggError(
                f"the server forwarded a share from {share.sender} to {share.recipient} that is not mine to hold"
            )
        plain = open_sealed(
            state.sealing[share.sender], share.ciphertext, _associated(setup.instance, share.sender, me)
        )
        if len(plain) != 16 + 2 * 66 or struct.unpack(">QQ", plain[:16]) != (share.sender, me):
            raise SecAggError(f"the share from {share.sender} is malformed")
        held[share.sender] = (secret_from_bytes(plain[16:82]), secret_from_bytes(plain[82:]))
    if len(held) < setup.threshold:
        raise SecAggError(f"only {len(held)} of my neighbours shared their keys; at least {setup.threshold} must")
    assert state.input is not None
    total = state.input.copy()
    add_mask(total, state.secrets.seed)
    for peer in sorted(held):
        seed = pairwise_seed(state.secrets.mask, state.peers[peer].mask_key, setup.instance, me, peer)
        add_mask(total, seed, subtract=me > peer)  # uint32 arithmetic wraps mod 2**32
    if setup.bits < 32:
        total &= np.uint32((1 << setup.bits) - 1)
    next_state = dataclasses.replace(state, stage=ClientStage.MASKED, held=held, input=None)
    return next_state, MaskedInput(setup.instance, me, setup.bits, total)


def _sign(state: ClientState, message: ConsistencyRequest) -> tuple[ClientState, ConsistencySignature]:
    setup, me = state.setup, state.client
    survivors = message.survivors
    if list(survivors) != sorted(set(survivors)) or me not in survivors or not set(survivors) <= set(setup.clients):
        raise SecAggError("the survivors list is malformed or leaves me out")
    if len(survivors) < setup.min_survivors:
        raise SecAggError(f"a sum of {len(survivors)} inputs is below the minimum of {setup.min_survivors}")
    strangers = set(survivors) & set(setup.neighbours(me)) - set(state.held)
    if strangers:
        raise SecAggError(f"neighbours {sorted(strangers)} are listed as survivors but never shared with me")
    if not setup.connected(survivors):
        raise SecAggError(
            "the survivors fall apart into pieces of the neighbour graph; the sum of a piece would be revealed"
        )
    signature = sign(state.secrets.signing, consistency_message(setup.instance, survivors))
    next_state = dataclasses.replace(state, stage=ClientStage.SIGNED, survivors=survivors)
    return next_state, ConsistencySignature(setup.instance, me, signature)


def _unmask(state: ClientState, message: UnmaskRequest) -> tuple[ClientState, UnmaskShares]:
    setup, me = state.setup, state.client
    if message.survivors != state.survivors:
        raise SecAggError("the unmasking request names other survivors than the list I signed")
    signers = [s.client for s in message.signatures]
    if len(set(signers)) != len(signers) or not set(signers) <= set(state.survivors) or me not in signers:
        raise SecAggError("the consistency signatures are repeated, from non-survivors, or leave me out")
    if len(signers) < setup.min_survivors:
        raise SecAggError(f"only {len(signers)} survivors signed; at least {setup.min_survivors} must")
    signed = consistency_message(setup.instance, state.survivors)
    for entry in message.signatures:
        if entry.client == me:
            verify(state.keys.signing_key, entry.signature, signed)
        elif entry.client in state.peers:
            verify(state.peers[entry.client].signing_key, entry.signature, signed)
    alive = set(state.survivors)
    seeds = tuple((peer, secret_to_bytes(shares[0])) for peer, shares in sorted(state.held.items()) if peer in alive)
    keys = tuple((peer, secret_to_bytes(shares[1])) for peer, shares in sorted(state.held.items()) if peer not in alive)
    return dataclasses.replace(state, stage=ClientStage.DONE), UnmaskShares(setup.instance, me, seeds, keys)


_EXPECTS: dict[ClientStage, type[ServerMessage]] = {
    ClientStage.ADVERTISED: PeerKeys,
    ClientStage.SHARED: ForwardedShares,
    ClientStage.MASKED: ConsistencyRequest,
    ClientStage.SIGNED: UnmaskRequest,
}


def _advance(state: ClientState, message: ServerMessage) -> tuple[ClientState, ClientMessage]:
    expect_turn(
        message,
        _EXPECTS.get(state.stage),
        state.setup.instance,
        out_of_turn=f"arrived while the client is {state.stage.value}",
    )
    if isinstance(message, PeerKeys):
        return _share(state, message)
    if isinstance(message, ForwardedShares):
        return _mask(state, message)
    if isinstance(message, ConsistencyRequest):
        return _sign(state, message)
    return _unmask(state, message)


def client_step(state: ClientState, message: ServerMessage) -> tuple[ClientState, ClientMessage | None]:
    """The client's next state and reply on a server message (None: it sends nothing).

    Never raises for anything the server sends: a message out of turn, for another
    instance, forged or against the rules aborts the client, with the reason.
    """
    try:
        return _advance(state, message)
    except SecAggError as exc:
        return dataclasses.replace(state, stage=ClientStage.ABORTED, reason=str(exc), input=None), None
