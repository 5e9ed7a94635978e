"""Secure aggregation (SecAgg+) with distributed differential privacy.

The server learns only the sum of the cohort's updates — and, with distributed DP, only a
noised sum: every client adds its share of discrete Gaussian noise inside the masked
integer ring. One concept per module:

- :mod:`~sheaf.secagg.crypto` — X25519, HKDF-SHA256, ChaCha20-Poly1305, Ed25519 and the
  AES-256-CTR mask expansion, from ``cryptography``;
- :mod:`~sheaf.secagg.shamir` — Shamir secret sharing over GF(2**521 - 1);
- :mod:`~sheaf.secagg.setup` — one protocol instance: cohort, neighbour graph, thresholds;
- :mod:`~sheaf.secagg.messages` — the typed messages and their bytes;
- :mod:`~sheaf.secagg.client` and :mod:`~sheaf.secagg.server` — the two state machines;
- :mod:`~sheaf.secagg.driver` — the in-process transport, and the exact stand-in;
- :mod:`~sheaf.secagg.discrete_gaussian` — the exact discrete Gaussian sampler;
- :mod:`~sheaf.secagg.accounting` — the distributed discrete Gaussian's privacy, in RDP;
- :mod:`~sheaf.secagg.plan` — what ``[secagg]`` resolves to for a run;
- :mod:`~sheaf.secagg.step` — both halves as a strategy step (quantise on the client,
  unmask the sum on the server), :func:`with_secure_aggregation`;
- :mod:`~sheaf.secagg.distributed` — distributed DP's noise top-up to K shares, its mean and its
  privacy ledger.

See ``docs/secure-aggregation.md``.
"""

from sheaf.secagg.accounting import (
    ORDERS,
    DistributedMechanism,
    calibrate_distributed,
    epsilon_from_rdp,
    planned_epsilon,
    poisson_subsampled_rdp,
    rounded_sensitivity,
    symmetric_subsampled_rdp,
)
from sheaf.secagg.client import (
    ClientStage,
    ClientState,
    client_step,
    consistency_message,
    pair_context,
    pairwise_seed,
    share_key,
    start_client,
)
from sheaf.secagg.crypto import (
    KEY_BYTES,
    NONCE_BYTES,
    SIGNATURE_BYTES,
    TAG_BYTES,
    add_mask,
    agree,
    derive_key,
    expand_mask,
    generate_keypair,
    generate_signing_keypair,
    keystream,
    load_private,
    load_public,
    open_sealed,
    private_bytes,
    public_key_of,
    seal,
    sign,
    verify,
)
from sheaf.secagg.discrete_gaussian import (
    MAX_VARIANCE,
    bernoulli_exp,
    discrete_gaussian,
    discrete_gaussian_pmf,
    discrete_laplace,
)
from sheaf.secagg.distributed import DistributedState, distributed_mean, top_up, top_up_bits
from sheaf.secagg.driver import ProtocolOutcome, Stage, exact_protocol, run_protocol
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
    decode_message,
    encode_message,
    expect_turn,
)
from sheaf.secagg.plan import SecAggPlan, cohort_bound, max_inputs_for, secagg_plan
from sheaf.secagg.server import ServerStage, ServerState, server_close, server_receive, start_server
from sheaf.secagg.setup import GRAPH_FAILURE, INSTANCE_BYTES, ProtocolSetup, degree_for, protocol_setup
from sheaf.secagg.shamir import (
    PRIME,
    SHARE_BYTES,
    combine,
    combine_all,
    lagrange_at_zero,
    secret_from_bytes,
    secret_to_bytes,
    split,
)
from sheaf.secagg.step import (
    INPUT_GROUP,
    ROTATION_OPTION,
    SECAGG_ENCODE,
    SECURE_AGGREGATION,
    SecureState,
    round_seeds,
    secure_aggregate,
    simulated_dropouts,
    with_secure_aggregation,
)

__all__ = [
    "GRAPH_FAILURE",
    "INPUT_GROUP",
    "INSTANCE_BYTES",
    "KEY_BYTES",
    "MAX_VARIANCE",
    "NONCE_BYTES",
    "ORDERS",
    "PRIME",
    "ROTATION_OPTION",
    "SECAGG_ENCODE",
    "SECURE_AGGREGATION",
    "SHARE_BYTES",
    "SIGNATURE_BYTES",
    "TAG_BYTES",
    "AdvertiseKeys",
    "ClientMessage",
    "ClientStage",
    "ClientState",
    "ConsistencyRequest",
    "ConsistencySignature",
    "DistributedMechanism",
    "DistributedState",
    "EncryptedShare",
    "ForwardedShares",
    "MaskedInput",
    "PeerKeys",
    "ProtocolOutcome",
    "ProtocolSetup",
    "SecAggPlan",
    "SecureState",
    "ServerMessage",
    "ServerStage",
    "ServerState",
    "ShareKeys",
    "Stage",
    "UnmaskRequest",
    "UnmaskShares",
    "add_mask",
    "agree",
    "bernoulli_exp",
    "calibrate_distributed",
    "client_step",
    "cohort_bound",
    "combine",
    "combine_all",
    "consistency_message",
    "decode_message",
    "degree_for",
    "derive_key",
    "discrete_gaussian",
    "discrete_gaussian_pmf",
    "discrete_laplace",
    "distributed_mean",
    "encode_message",
    "epsilon_from_rdp",
    "exact_protocol",
    "expand_mask",
    "expect_turn",
    "generate_keypair",
    "generate_signing_keypair",
    "keystream",
    "lagrange_at_zero",
    "load_private",
    "load_public",
    "max_inputs_for",
    "open_sealed",
    "pair_context",
    "pairwise_seed",
    "planned_epsilon",
    "poisson_subsampled_rdp",
    "private_bytes",
    "protocol_setup",
    "public_key_of",
    "round_seeds",
    "rounded_sensitivity",
    "run_protocol",
    "seal",
    "secagg_plan",
    "secret_from_bytes",
    "secret_to_bytes",
    "secure_aggregate",
    "server_close",
    "server_receive",
    "share_key",
    "sign",
    "simulated_dropouts",
    "split",
    "start_client",
    "start_server",
    "symmetric_subsampled_rdp",
    "top_up",
    "top_up_bits",
    "verify",
    "with_secure_aggregation",
]
