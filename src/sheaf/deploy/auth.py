"""Client authentication: every request is signed with the client's own Ed25519 key.

Each client holds a private key; the server holds the list of authorised public keys
(``authorized_clients``: one line per client, ``<id> <name> <base64 public key>``, then
optional ``key=value`` settings the operator declares for that client: ``max_examples=N``,
the most examples it may claim for an update or an evaluation). A request carries four
metadata entries:

- ``sheaf-key``: the key id, the first 32 hex digits of SHA-256 of the raw public key;
- ``sheaf-time``: the client's clock in Unix milliseconds;
- ``sheaf-nonce``: 32 random hex digits, never reused;
- ``sheaf-signature``: base64 of the Ed25519 signature over ``sheaf-v1``, the method
  path, the key id, the time, the nonce and the SHA-256 digest of the request's bytes
  (for a stream, of every message's length and bytes in order).

The server refuses a key it does not know, malformed entries (a time of more than 16
digits, a nonce that is not 32 hex digits, an oversized signature), a time off its own
clock by more than ``max_skew`` seconds, a nonce it has seen within the window (a replay),
and a signature that does not verify over the digest *it* computed from the bytes that
arrived. A nonce is kept only once its request's signature verified — so nobody without
the key can fill the server's memory of nonces — and, when the verifier is given a
``remember`` callback, written down (the server keeps them in its run store), so a replay
is refused after a restart too.

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
import re
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from sheaf.core.errors import ConfigError, SheafError
from sheaf.core.update import MAX_EXAMPLES

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

#: What each metadata entry must look like before anything else is done with it.
_KEY_ID = re.compile(r"[0-9a-f]{32}")
_STAMP = re.compile(r"[0-9]{1,16}")  # Unix milliseconds: 13 digits until the year 2286
_NONCE = re.compile(r"[0-9a-f]{32}")
_MAX_ENTRY = 200  # characters of any sheaf entry (a base64 Ed25519 signature is 88)
#: The settings an ``authorized_clients`` line may declare after the key.
_SETTINGS = ("max_examples",)


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
        max_examples: the most examples the operator lets it claim (None: the run's
            ``server.max_examples``).
    """

    client_id: int
    name: str
    public_key: Ed25519PublicKey
    max_examples: int | None = None

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


def authorized_line(client_id: int, name: str, public_key: Ed25519PublicKey, *, max_examples: int | None = None) -> str:
    """One line of an ``authorized_clients`` file.

    Raises:
        ConfigError: if ``max_examples`` is given and not from 1 to
            :data:`~sheaf.core.update.MAX_EXAMPLES`.
    """
    line = f"{client_id} {name} {base64.b64encode(_raw(public_key)).decode()}"
    if max_examples is not None:
        line += f" max_examples={_examples(str(max_examples), 'max_examples')}"
    return line


def _examples(text: str, where: str) -> int:
    if not text.isascii() or not text.isdigit() or len(text) > 10 or not 1 <= int(text) <= MAX_EXAMPLES:
        raise ConfigError(f"{where} must be a whole number from 1 to {MAX_EXAMPLES}, got {text[:20]!r}")
    return int(text)


def _settings(entries: Sequence[str], where: str) -> dict[str, int]:
    """The ``key=value`` settings after a line's key, each known and given once."""
    settings: dict[str, int] = {}
    for entry in entries:
        key, equals, value = entry.partition("=")
        if not equals or key not in _SETTINGS:
            raise ConfigError(f"{where}: unknown setting {entry[:40]!r}; a client's line may declare {list(_SETTINGS)}")
        if key in settings:
            raise ConfigError(f"{where}: {key} is declared twice")
        settings[key] = _examples(value, f"{where}: {key}")
    return settings


def load_authorized_clients(path: str | Path) -> dict[str, AuthorizedClient]:
    """Read an ``authorized_clients`` file: key id -> client.

    Lines are ``<client id> <name> <base64 raw Ed25519 public key> [max_examples=N]``;
    ``#`` starts a comment.

    Raises:
        ConfigError: naming the line that is malformed (an unknown or repeated setting, a
            value out of range), or a repeated id or key.
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
        if len(parts) < 3 or not parts[0].isascii() or not parts[0].isdigit():
            raise ConfigError(
                f"{where}: expected '<client id> <name> <base64 public key> [max_examples=N]', got {content[:80]!r}"
            )
        settings = _settings(parts[3:], where)
        try:
            raw = base64.b64decode(parts[2], validate=True)
            public_key = Ed25519PublicKey.from_public_bytes(raw)
        except (binascii.Error, ValueError):
            raise ConfigError(f"{where}: {parts[2][:20]!r}... is not a base64 Ed25519 public key") from None
        client = AuthorizedClient(int(parts[0]), parts[1], public_key, settings.get("max_examples"))
        if client.client_id in ids or client.key_id in clients:
            raise ConfigError(f"{where}: client id {client.client_id} or its key appears twice")
        ids.add(client.client_id)
        clients[client.key_id] = client
    if not clients:
        raise ConfigError(f"{str(file)!r} authorises no clients; add lines with 'sheaf keys client'")
    return clients


def _entry(metadata: Metadata, name: str, pattern: re.Pattern[str] | None = None) -> str:
    """The value of metadata entry ``name``, checked against ``pattern`` before it is used."""
    for key, value in metadata:
        if key == name:
            if len(value) > _MAX_ENTRY:
                raise AuthError(f"malformed {name} metadata: {len(value)} characters, at most {_MAX_ENTRY}")
            try:
                text = value.decode("ascii") if isinstance(value, bytes) else value
            except UnicodeDecodeError:
                raise AuthError(f"malformed {name} metadata: not ASCII") from None
            if pattern is not None and not pattern.fullmatch(text):
                raise AuthError(f"malformed {name} metadata {text[:40]!r}; is the client a sheaf client?")
            return text
    raise AuthError(f"request lacks the {name} metadata; is the client a sheaf client with a key?")


class RequestVerifier:
    """Checks signed requests: known key, fresh time, unused nonce, valid signature.

    Args:
        clients: key id -> authorised client.
        max_skew: the most seconds a request's time may differ from the server's clock.
        clock: returns the time in seconds (for tests).
        seen: ``(nonce, expiry)`` pairs used before (e.g. before a restart): refused as
            replays until their expiry.
        remember: called with ``(nonce, expiry)`` for every nonce of a verified request,
            before the request is answered (the server writes it to its run store).
    """

    def __init__(
        self,
        clients: Mapping[str, AuthorizedClient],
        max_skew: float = 300.0,
        clock: Callable[[], float] = time.time,
        *,
        seen: Iterable[tuple[str, float]] = (),
        remember: Callable[[str, float], None] | None = None,
    ) -> None:
        self.clients = dict(clients)
        self.max_skew = max_skew
        self._clock = clock
        self._lock = threading.Lock()
        self._remember = remember
        self._nonces: set[str] = set()
        self._expiry: deque[tuple[float, str]] = deque()
        for nonce, expiry in sorted(seen, key=lambda pair: pair[1]):
            if nonce not in self._nonces:
                self._nonces.add(nonce)
                self._expiry.append((expiry, nonce))

    def precheck(self, method: str, metadata: Metadata) -> tuple[AuthorizedClient, tuple[str, str, str]]:
        """Check key, time and nonce before reading the body (nothing is kept yet).

        Returns:
            The client, and what :meth:`verify` needs once the body's digest is known.

        Raises:
            AuthError: naming what is wrong (unknown key, stale time, replay, bad metadata).
        """
        key = _entry(metadata, KEY_HEADER)
        client = self.clients.get(key) if _KEY_ID.fullmatch(key) else None
        if client is None:
            raise AuthError(f"unknown client key {key[:32]!r}; add its public key to the server's authorized_clients")
        stamp, nonce = _entry(metadata, TIME_HEADER, _STAMP), _entry(metadata, NONCE_HEADER, _NONCE)
        now = self._clock()
        skew = int(stamp) / 1000 - now
        if abs(skew) > self.max_skew:
            raise AuthError(
                f"request from {client} is {abs(skew):.0f} s off the server's clock (at most {self.max_skew:.0f} s); "
                "check the client's clock or this is a replay"
            )
        with self._lock:
            self._forget(now)
            if nonce in self._nonces:
                raise AuthError(f"replayed request (nonce already used) from {client}")
        return client, (method, stamp, nonce)

    def _forget(self, now: float) -> None:
        """Drop nonces whose requests are out of the window (called with the lock held)."""
        while self._expiry and self._expiry[0][0] < now:
            self._nonces.discard(self._expiry.popleft()[1])

    def verify(self, client: AuthorizedClient, pending: tuple[str, str, str], signature: str, digest: str) -> None:
        """Check the signature over the body digest the server computed; then use the nonce up.

        Raises:
            AuthError: if the signature does not verify (tampered, or signed by another key),
                or the nonce was used meanwhile (a replay racing the original).
        """
        method, stamp, nonce = pending
        try:
            if len(signature) > _MAX_ENTRY:
                raise ValueError("signature too long")
            raw = base64.b64decode(signature, validate=True)
            client.public_key.verify(raw, _signed_text(method, client.key_id, stamp, nonce, digest))
        except (binascii.Error, ValueError, InvalidSignature):
            raise AuthError(f"bad signature on a {method.rsplit('/', 1)[-1]} request from {client}") from None
        # Kept until the request's own time is out of the window: from then on a replay is
        # refused as stale (a second's margin for the clock's rounding).
        expiry = int(stamp) / 1000 + self.max_skew + 1.0
        with self._lock:
            if nonce in self._nonces:
                raise AuthError(f"replayed request (nonce already used) from {client}")
            self._nonces.add(nonce)
            self._expiry.append((expiry, nonce))
            if self._remember is not None:
                self._remember(nonce, expiry)

    def authenticate(self, method: str, metadata: Metadata, digest: str) -> AuthorizedClient:
        """Both checks at once, for a request whose body is already in hand."""
        client, pending = self.precheck(method, metadata)
        self.verify(client, pending, _entry(metadata, SIGNATURE_HEADER), digest)
        return client
