"""Signed requests: known key, fresh time, unused nonce, signature over the received bytes."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from sheaf.core.errors import ConfigError
from sheaf.deploy.auth import (
    AuthError,
    AuthorizedClient,
    BodyDigest,
    ClientIdentity,
    RequestVerifier,
    authorized_line,
    load_authorized_clients,
    load_identity,
)

JOIN = "/sheaf.v1.Federation/Join"


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def setup(clock: Clock | None = None) -> tuple[ClientIdentity, RequestVerifier]:
    clock = clock or Clock()
    identity = ClientIdentity(Ed25519PrivateKey.generate(), clock=clock)
    client = AuthorizedClient(3, "hungary", identity.public_key)
    return identity, RequestVerifier({identity.key_id: client}, max_skew=60, clock=clock)


def digest(body: bytes) -> str:
    return BodyDigest().update(body).digest()


def test_a_signed_request_authenticates_its_client_once() -> None:
    identity, verifier = setup()
    metadata = identity.sign(JOIN, digest(b"body"))
    assert verifier.authenticate(JOIN, metadata, digest(b"body")).client_id == 3
    with pytest.raises(AuthError, match="replayed request"):
        verifier.authenticate(JOIN, metadata, digest(b"body"))


@pytest.mark.parametrize(
    ("method", "body", "match"),
    [(JOIN, b"other body", "bad signature"), ("/sheaf.v1.Federation/PullTask", b"body", "bad signature")],
)
def test_a_signature_covers_the_method_and_the_exact_bytes(method: str, body: bytes, match: str) -> None:
    identity, verifier = setup()
    metadata = identity.sign(JOIN, digest(b"body"))
    with pytest.raises(AuthError, match=match):
        verifier.authenticate(method, metadata, digest(body))


def test_messages_are_length_prefixed_in_the_digest() -> None:
    assert BodyDigest().update(b"ab").update(b"c").digest() != BodyDigest().update(b"a").update(b"bc").digest()


def test_an_unknown_key_or_another_clients_signature_is_refused() -> None:
    identity, verifier = setup()
    stranger = ClientIdentity(Ed25519PrivateKey.generate(), clock=Clock())
    with pytest.raises(AuthError, match="unknown client key"):
        verifier.authenticate(JOIN, stranger.sign(JOIN, digest(b"x")), digest(b"x"))
    forged = [(k, v) for k, v in stranger.sign(JOIN, digest(b"x")) if k != "sheaf-key"] + [
        ("sheaf-key", identity.key_id)
    ]
    with pytest.raises(AuthError, match="bad signature"):
        verifier.authenticate(JOIN, forged, digest(b"x"))


def test_requests_too_far_from_the_servers_clock_are_refused() -> None:
    clock = Clock()
    identity, verifier = setup(clock)
    old = identity.sign(JOIN, digest(b"x"))
    clock.now += 61
    with pytest.raises(AuthError, match="61 s off the server's clock"):
        verifier.authenticate(JOIN, old, digest(b"x"))
    future = ClientIdentity(identity._key, clock=lambda: clock.now + 120)
    with pytest.raises(AuthError, match="off the server's clock"):
        verifier.authenticate(JOIN, future.sign(JOIN, digest(b"x")), digest(b"x"))


def test_used_nonces_are_forgotten_only_once_their_time_is_out_of_the_window() -> None:
    clock = Clock()
    identity, verifier = setup(clock)
    for _ in range(50):
        verifier.authenticate(JOIN, identity.sign(JOIN, digest(b"x")), digest(b"x"))
        clock.now += 10
    assert len(verifier._nonces) <= 13  # 2 x 60 s window at one request per 10 s


@pytest.mark.parametrize(
    "metadata",
    [[], [("sheaf-key", "k")], [("sheaf-key", "?"), ("sheaf-time", "x"), ("sheaf-nonce", "short")]],
)
def test_missing_or_malformed_metadata_is_refused(metadata: list[tuple[str, str]]) -> None:
    identity, verifier = setup()
    if metadata and metadata[0][1] == "?":
        metadata[0] = ("sheaf-key", identity.key_id)
    with pytest.raises(AuthError):
        verifier.authenticate(JOIN, metadata, digest(b""))


def test_the_authorized_clients_file_round_trips_and_names_bad_lines(tmp_path: Path) -> None:
    keys = [Ed25519PrivateKey.generate().public_key() for _ in range(2)]
    path = tmp_path / "authorized_clients"
    path.write_text(
        f"# comment\n{authorized_line(0, 'a', keys[0])}\n\n{authorized_line(5, 'b', keys[1])}  # trailing\n"
    )
    clients = load_authorized_clients(path)
    assert sorted((c.client_id, c.name) for c in clients.values()) == [(0, "a"), (5, "b")]
    path.write_text(f"{authorized_line(0, 'a', keys[0])}\n{authorized_line(0, 'b', keys[1])}\n")
    with pytest.raises(ConfigError, match=r"authorized_clients:2: client id 0 or its key appears twice"):
        load_authorized_clients(path)
    path.write_text("0 a not-base64!\n")
    with pytest.raises(ConfigError, match=r":1: 'not-base64!'... is not a base64 Ed25519 public key"):
        load_authorized_clients(path)
    path.write_text("zero a key\n")
    with pytest.raises(ConfigError, match="expected '<client id> <name> <base64 public key> "):
        load_authorized_clients(path)
    path.write_text("# nobody\n")
    with pytest.raises(ConfigError, match="authorises no clients"):
        load_authorized_clients(path)
    with pytest.raises(ConfigError, match="not found"):
        load_authorized_clients(tmp_path / "missing")


def test_a_line_may_declare_the_most_examples_its_client_may_claim(tmp_path: Path) -> None:
    keys = [Ed25519PrivateKey.generate().public_key() for _ in range(2)]
    path = tmp_path / "authorized_clients"
    path.write_text(f"{authorized_line(0, 'a', keys[0], max_examples=300)}\n{authorized_line(1, 'b', keys[1])}\n")
    clients = {c.client_id: c for c in load_authorized_clients(path).values()}
    assert (clients[0].max_examples, clients[1].max_examples) == (300, None)
    key = authorized_line(0, "a", keys[0])
    for settings, match in [
        ("max_examples=0", "from 1 to 536870911, got '0'"),
        ("max_examples=1e12", "got '1e12'"),
        ("max_examples=536870912", "got '536870912'"),
        ("max_examples=\u0663", "got '\u0663'"),  # a digit, but not an ASCII one
        ("max_examples=3 max_examples=4", "declared twice"),
        ("weight=3", "unknown setting 'weight=3'"),
        ("max_examples", "unknown setting 'max_examples'"),
    ]:
        path.write_text(f"{key} {settings}\n")
        with pytest.raises(ConfigError, match=match):
            load_authorized_clients(path)
    with pytest.raises(ConfigError, match="from 1 to"):
        authorized_line(0, "a", keys[0], max_examples=-5)


def test_a_client_key_must_be_an_ed25519_pem(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_identity(tmp_path / "missing.key")
    (tmp_path / "junk.key").write_text("junk")
    with pytest.raises(ConfigError, match="not an unencrypted PEM private key"):
        load_identity(tmp_path / "junk.key")
    ecdsa = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    (tmp_path / "ec.key").write_bytes(ecdsa)
    with pytest.raises(ConfigError, match="sign with Ed25519 keys"):
        load_identity(tmp_path / "ec.key")


@pytest.mark.parametrize(
    ("entry", "value", "match"),
    [
        ("sheaf-time", "9" * 400, "malformed sheaf-time"),  # escaped as OverflowError before
        ("sheaf-time", "\u00b2", "malformed sheaf-time"),  # str.isdigit() says yes; int() says no
        ("sheaf-time", b"\xff\xfe", "not ASCII"),
        ("sheaf-nonce", "z" * 32, "malformed sheaf-nonce"),
        ("sheaf-key", "k" * 10_000, "at most 200"),
        ("sheaf-signature", "A" * 10_000, "at most 200"),
    ],
)
def test_malformed_metadata_is_refused_as_an_auth_error(entry: str, value: str | bytes, match: str) -> None:
    identity, verifier = setup()
    metadata = [(k, value if k == entry else v) for k, v in identity.sign(JOIN, digest(b"x"))]
    with pytest.raises(AuthError, match=match):
        verifier.authenticate(JOIN, metadata, digest(b"x"))


def test_a_request_whose_signature_fails_leaves_no_nonce_behind() -> None:
    identity, verifier = setup()
    genuine = identity.sign(JOIN, digest(b"x"))
    for _ in range(1000):  # anyone may send these: a known key id is no secret
        forged = [(k, v) for k, v in identity.sign(JOIN, digest(b"x")) if k != "sheaf-signature"]
        with pytest.raises(AuthError, match="bad signature"):
            verifier.authenticate(JOIN, [*forged, ("sheaf-signature", "A" * 88)], digest(b"x"))
    with pytest.raises(AuthError, match="bad signature"):  # the genuine request's nonce, forged
        verifier.authenticate(JOIN, [*genuine[:3], ("sheaf-signature", "A" * 88)], digest(b"x"))

    assert verifier._nonces == set()
    assert verifier.authenticate(JOIN, genuine, digest(b"x")).client_id == 3


def test_nonces_written_down_are_refused_by_a_verifier_that_reads_them_back() -> None:
    clock = Clock()
    identity, before_restart = setup(clock)
    written: list[tuple[str, float]] = []
    verifier = RequestVerifier(before_restart.clients, max_skew=60, clock=clock, remember=lambda *p: written.append(p))
    captured = identity.sign(JOIN, digest(b"x"))
    verifier.authenticate(JOIN, captured, digest(b"x"))

    after_restart = RequestVerifier(verifier.clients, max_skew=60, clock=clock, seen=written)

    with pytest.raises(AuthError, match="replayed request"):
        after_restart.authenticate(JOIN, captured, digest(b"x"))
    clock.now += 62  # out of the window: refused as stale, and forgotten
    with pytest.raises(AuthError, match="off the server's clock"):
        after_restart.authenticate(JOIN, captured, digest(b"x"))
    after_restart.authenticate(JOIN, identity.sign(JOIN, digest(b"x")), digest(b"x"))
    assert len(after_restart._nonces) == 1
