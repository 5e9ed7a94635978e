"""Client authentication: every request is signed with the client's own Ed25519 key.

Each client holds a private key; the server holds the list of authorised public keys
(``authorized_clients``: one line per client, ``<id> <name> <base64 public key>``). A
request carries four metadata entries:

- ``sheaf-key``: the key id, the first 32 hex digits of SHA-256 of the raw public key;
- ``sheaf-time``: the client's clock in Unix milliseconds;
- ``sheaf-nonce``: 32 random hex digits, never reused;
- ``sheaf-signature``: base64 of the Ed25519 signature over ``sheaf-v1``, the method
  path, the key id, the time, the nonce and the SHA-256 digest of the request's bytes
  (for a stream, of every message's length and bytes in order).

The server refuses a key it does not know, a time off its own clock by more than
``max_skew`` seconds, a nonce it has seen within the window (a replay), and a signature
that does not verify over the digest *it* computed from the bytes that arrived.

References:
    Bernstein, Duif, Lange, Schwabe, Yang. High-speed high-security signatures (Ed25519),
    Journal of Cryptographic Engineering 2012; RFC 8032.

Example:
    >>> from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    >>> identity = ClientIdentity(Ed25519PrivateKey.generate())
    >>> clients = {identity.key_id: AuthorizedClient(0, "cleveland", identity.public_key)}
    >>> verifier = RequestVerifier(clients)
    >>> digest = BodyDigest().update(b"request").digest()
    >>> metadata = identity.sign("/sheaf.v1.Federation/Join", digest)
    >>> verifier.authenticate("/sheaf.v1.Federation/Join", metadata, digest).name
    'cleveland'
    >>> verifier.authenticate("/sheaf.v1.Federation/Join", metadata, digest)
    Traceback (most recent call last):
    ...
    sheaf.deploy.auth.AuthError: replayed request (nonce already used) from client 0 (cleveland)
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from sheaf.core.errors import ConfigError, SheafError

__all__ = [
    "AuthError",
    "AuthorizedClient",
    "BodyDigest",
    "ClientIdentity",
    "RequestVerifier",
    "authorized_line",
    "key_id",
    "load_authorized_clients",
    "load_identity",
]

KEY_HEADER = "sheaf-key"
TIME_HEADER = "sheaf-time"
NONCE_HEADER = "sheaf-nonce"
SIGNATURE_HEADER = "sheaf-signature"

Metadata = Sequence[tuple[str, str | bytes]]


class AuthError(SheafError):
    """A request is not from an authorised client, or not fresh, or not intact."""


def _raw(public_key: Ed25519PublicKey) -> bytes:
    return public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id(public_key: Ed25519PublicKey) -> str:
    """A short stable id for a public key: 32 hex digits of its SHA-256."""
    return hashlib.sha256(_raw(public_key)).hexdigest()[:32]


class BodyDigest:
    """SHA-256 over a request's messages, each prefixed by its length (8 bytes, big-endian)."""

    def __init__(self) -> None:
        self._hash = hashlib.sha256()

    def update(self, message: bytes) -> BodyDigest:
        """Add the next message; returns self."""
        self._hash.update(len(message).to_bytes(8, "big"))
        self._hash.update(message)
        return self

    def digest(self) -> str:
        """The hex digest so far."""
        return self._hash.hexdigest()


def _signed_text(method: str, key: str, stamp: str, nonce: str, digest: str) -> bytes:
    return "\n".join(("sheaf-v1", method, key, stamp, nonce, digest)).encode()


@dataclass(frozen=True)
class AuthorizedClient:
    """A client the server accepts.

    Attributes:
        client_id: its id in the run (the id simulation would give it).
        name: a readable name (e.g. the hospital).
        public_key: its Ed25519 public key.
    """

    client_id: int
    name: str
    public_key: Ed25519PublicKey

    @property
    def key_id(self) -> str:
        """The id its requests carry."""
        return key_id(self.public_key)

    def __str__(self) -> str:
        return f"client {self.client_id} ({self.name})"


class ClientIdentity:
    """A client's private key, used to sign its requests.

    Args:
        private_key: the client's Ed25519 private key.
        clock: returns the time in seconds (for tests).
    """

    def __init__(self, private_key: Ed25519PrivateKey, clock: Callable[[], float] = time.time) -> None:
        self._key = private_key
        self._clock = clock
        self.public_key = private_key.public_key()
        self.key_id = key_id(self.public_key)

    def sign(self, method: str, digest: str) -> tuple[tuple[str, str], ...]:
        """The metadata that authenticates one request with body digest ``digest``."""
        stamp = str(int(self._clock() * 1000))
        nonce = secrets.token_hex(16)
        signature = self._key.sign(_signed_text(method, self.key_id, stamp, nonce, digest))
        return (
            (KEY_HEADER, self.key_id),
            (TIME_HEADER, stamp),
            (NONCE_HEADER, nonce),
            (SIGNATURE_HEADER, base64.b64encode(signature).decode()),
        )


def load_identity(path: str | Path) -> ClientIdentity:
    """Load a client's private key (PEM, as ``sheaf keys`` writes it).

    Raises:
        ConfigError: if the file is missing or holds no Ed25519 private key.
    """
    file = Path(path)
    try:
        key = serialization.load_pem_private_key(file.read_bytes(), password=None)
    except FileNotFoundError:
        raise ConfigError(f"client key {str(file)!r} not found; create one with 'sheaf keys client'") from None
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{str(file)!r} is not an unencrypted PEM private key: {exc}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(f"{str(file)!r} holds a {type(key).__name__}; sheaf clients sign with Ed25519 keys")
    return ClientIdentity(key)


def authorized_line(client_id: int, name: str, public_key: Ed25519PublicKey) -> str:
    """One line of an ``authorized_clients`` file."""
    return f"{client_id} {name} {base64.b64encode(_raw(public_key)).decode()}"


def load_authorized_clients(path: str | Path) -> dict[str, AuthorizedClient]:
    """Read an ``authorized_clients`` file: key id -> client.

    Lines are ``<client id> <name> <base64 raw Ed25519 public key>``; ``#`` starts a comment.

    Raises:
        ConfigError: naming the line that is malformed, or a repeated id, name or key.
    """
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"authorized clients file {str(file)!r} not found; 'sheaf keys init' writes one") from None
    clients: dict[str, AuthorizedClient] = {}
    ids: set[int] = set()
    for number, line in enumerate(text.splitlines(), start=1):
        content = line.split("#", 1)[0].strip()
        if not content:
            continue
        where = f"{file}:{number}"
        parts = content.split()
        if len(parts) != 3 or not parts[0].isdigit():
            raise ConfigError(f"{where}: expected '<client id> <name> <base64 public key>', got {content[:80]!r}")
        try:
            raw = base64.b64decode(parts[2], validate=True)
            public_key = Ed25519PublicKey.from_public_bytes(raw)
        except (binascii.Error, ValueError):
            raise ConfigError(f"{where}: {parts[2][:20]!r}... is not a base64 Ed25519 public key") from None
        client = AuthorizedClient(int(parts[0]), parts[1], public_key)
        if client.client_id in ids or client.key_id in clients:
            raise ConfigError(f"{where}: client id {client.client_id} or its key appears twice")
        ids.add(client.client_id)
        clients[client.key_id] = client
    if not clients:
        raise ConfigError(f"{str(file)!r} authorises no clients; add lines with 'sheaf keys client'")
    return clients


def _entry(metadata: Metadata, name: str) -> str:
    for key, value in metadata:
        if key == name:
            return value.decode() if isinstance(value, bytes) else value
    raise AuthError(f"request lacks the {name} metadata; is the client a sheaf client with a key?")


class RequestVerifier:
    """Checks signed requests: known key, fresh time, unused nonce, valid signature.

    Args:
        clients: key id -> authorised client.
        max_skew: the most seconds a request's time may differ from the server's clock.
        clock: returns the time in seconds (for tests).
    """

    def __init__(
        self,
        clients: Mapping[str, AuthorizedClient],
        max_skew: float = 300.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.clients = dict(clients)
        self.max_skew = max_skew
        self._clock = clock
        self._lock = threading.Lock()
        self._nonces: set[str] = set()
        self._expiry: deque[tuple[float, str]] = deque()

    def precheck(self, method: str, metadata: Metadata) -> tuple[AuthorizedClient, tuple[str, str, str]]:
        """Check key, time and nonce before reading the body; the nonce is used up.

        Returns:
            The client, and what :meth:`verify` needs once the body's digest is known.

        Raises:
            AuthError: naming what is wrong (unknown key, stale time, replay, bad metadata).
        """
        key = _entry(metadata, KEY_HEADER)
        client = self.clients.get(key)
        if client is None:
            raise AuthError(f"unknown client key {key[:32]!r}; add its public key to the server's authorized_clients")
        stamp, nonce = _entry(metadata, TIME_HEADER), _entry(metadata, NONCE_HEADER)
        if not stamp.isdigit() or len(nonce) != 32:
            raise AuthError(f"malformed time or nonce metadata from {client}")
        now = self._clock()
        skew = int(stamp) / 1000 - now
        if abs(skew) > self.max_skew:
            raise AuthError(
                f"request from {client} is {abs(skew):.0f} s off the server's clock (at most {self.max_skew:.0f} s); "
                "check the client's clock or this is a replay"
            )
        with self._lock:
            while self._expiry and self._expiry[0][0] < now:
                self._nonces.discard(self._expiry.popleft()[1])
            if nonce in self._nonces:
                raise AuthError(f"replayed request (nonce already used) from {client}")
            self._nonces.add(nonce)
            # A nonce can be refused as stale once its time is out of the window.
            self._expiry.append((now + 2 * self.max_skew, nonce))
        return client, (method, stamp, nonce)

    def verify(self, client: AuthorizedClient, pending: tuple[str, str, str], signature: str, digest: str) -> None:
        """Check the signature over the body digest the server computed.

        Raises:
            AuthError: if the signature does not verify (tampered, or signed by another key).
        """
        method, stamp, nonce = pending
        try:
            raw = base64.b64decode(signature, validate=True)
            client.public_key.verify(raw, _signed_text(method, client.key_id, stamp, nonce, digest))
        except (binascii.Error, ValueError, InvalidSignature):
            raise AuthError(f"bad signature on a {method.rsplit('/', 1)[-1]} request from {client}") from None

    def authenticate(self, method: str, metadata: Metadata, digest: str) -> AuthorizedClient:
        """Both checks at once, for a request whose body is already in hand."""
        client, pending = self.precheck(method, metadata)
        self.verify(client, pending, _entry(metadata, SIGNATURE_HEADER), digest)
        return client
