"""Key material for a deployment: a CA, the server's TLS certificate, the clients' keys.

``sheaf keys init DIR`` writes, for one server and ``n`` clients::

    DIR/ca.pem                 the CA certificate: every client gets a copy, to verify the server
    DIR/ca.key                 the CA's private key (keep it offline; only needed to re-issue)
    DIR/server.pem, server.key the server's TLS certificate (signed by the CA) and key
    DIR/authorized_clients     the clients the server accepts: id, name, public key
    DIR/clients/client-<id>.key  each client's Ed25519 private key: give each to its client only

Private keys are written readable by their owner only. A client can also make its own key
on its own machine (``sheaf keys client``) and send the operator just the line for
``authorized_clients`` — then no private key ever travels. Either may declare the most
examples a client may claim (``--max-examples``): the server refuses a larger claim from
it (see :mod:`sheaf.deploy.auth`).

The CA and server keys are ECDSA P-256; the server certificate names every host clients
may dial (``localhost`` and ``127.0.0.1`` always, plus each ``--host``).

Example:
    >>> import tempfile, pathlib
    >>> folder = pathlib.Path(tempfile.mkdtemp()) / "keys"
    >>> made = init_keys(folder, ["cleveland", "hungary"])
    >>> [p.name for p in made.client_keys], len(load_authorized_clients(made.authorized))
    (['client-0.key', 'client-1.key'], 2)
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from sheaf.core.errors import ConfigError
from sheaf.deploy.auth import authorized_line, load_authorized_clients

__all__ = ["KeySet", "init_keys", "new_client_key"]

_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


@dataclass(frozen=True)
class KeySet:
    """Where :func:`init_keys` put everything.

    Attributes:
        folder: the folder.
        ca_cert: the CA certificate (give it to every client).
        server_cert: the server's certificate.
        server_key: the server's private key.
        authorized: the server's list of authorised clients.
        client_keys: each client's private key, by client id.
    """

    folder: Path
    ca_cert: Path
    server_cert: Path
    server_key: Path
    authorized: Path
    client_keys: list[Path]


def _write(path: Path, data: bytes, secret: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # O_EXCL: never overwrite key material; 0600 for private keys from the first byte.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600 if secret else 0o644)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def _pem_key(key: ec.EllipticCurvePrivateKey | Ed25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _name(common: str) -> x509.Name:
    return x509.Name(
        [x509.NameAttribute(NameOID.ORGANIZATION_NAME, "sheaf"), x509.NameAttribute(NameOID.COMMON_NAME, common)]
    )


def _alt_name(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def _check_name(name: str) -> str:
    if not _NAME.match(name):
        raise ConfigError(f"client name {name!r} must be 1-64 letters, digits, '.', '_' or '-'")
    return name


def init_keys(
    folder: str | Path,
    clients: int | Sequence[str],
    hosts: Sequence[str] = (),
    *,
    days: int = 825,
    max_examples: int | None = None,
) -> KeySet:
    """Create a CA, a server certificate and key pairs for clients ``0..n-1``.

    Args:
        folder: where to write (created; must not already hold key material).
        clients: how many clients, or their names (client ``i`` gets the ``i``-th name).
        hosts: host names or IP addresses clients will dial, beside localhost/127.0.0.1.
        days: how long the server certificate is valid.
        max_examples: the most examples each client may claim (None: the run's
            ``server.max_examples``); written on each client's line.

    Raises:
        ConfigError: if the folder already holds keys, or a name or count is invalid.
    """
    root = Path(folder)
    names = [f"client-{i}" for i in range(clients)] if isinstance(clients, int) else list(clients)
    if not names:
        raise ConfigError("sheaf keys init needs at least one client (--clients N or --names a,b,...)")
    for name in names:
        _check_name(name)
    if len(set(names)) != len(names):
        raise ConfigError(f"client names must be distinct, got {names}")
    probe = Ed25519PrivateKey.generate().public_key()
    authorized_line(0, names[0], probe, max_examples=max_examples)  # checks max_examples before writing
    existing = [p.name for p in (root / "ca.pem", root / "server.key", root / "authorized_clients") if p.exists()]
    if existing:
        raise ConfigError(
            f"{str(root)!r} already holds {existing}; choose an empty folder (keys are never overwritten)"
        )

    now = dt.datetime.now(dt.UTC)
    start = now - dt.timedelta(hours=1)  # tolerate clocks that run a little behind
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(_name("sheaf deployment CA"))
        .issuer_name(_name("sheaf deployment CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(now + dt.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )  # key_cert_sign, crl_sign
        .sign(ca_key, hashes.SHA256())
    )
    server_key = ec.generate_private_key(ec.SECP256R1())
    alt_names = list(dict.fromkeys(["localhost", "127.0.0.1", *hosts]))
    server_cert = (
        x509.CertificateBuilder()
        .subject_name(_name(alt_names[-1] if hosts else "localhost"))
        .issuer_name(ca_cert.subject)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName([_alt_name(h) for h in alt_names]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    made = KeySet(
        root,
        root / "ca.pem",
        root / "server.pem",
        root / "server.key",
        root / "authorized_clients",
        [root / "clients" / f"client-{i}.key" for i in range(len(names))],
    )
    _write(root / "ca.key", _pem_key(ca_key), secret=True)
    _write(made.ca_cert, ca_cert.public_bytes(serialization.Encoding.PEM))
    _write(made.server_key, _pem_key(server_key), secret=True)
    _write(made.server_cert, server_cert.public_bytes(serialization.Encoding.PEM))
    lines = ["# sheaf authorized clients: <client id> <name> <base64 Ed25519 public key>"]
    for client_id, (name, path) in enumerate(zip(names, made.client_keys, strict=True)):
        key = Ed25519PrivateKey.generate()
        _write(path, _pem_key(key), secret=True)
        lines.append(authorized_line(client_id, name, key.public_key(), max_examples=max_examples))
    _write(made.authorized, ("\n".join(lines) + "\n").encode())
    load_authorized_clients(made.authorized)  # what we wrote must read back
    return made


def new_client_key(path: str | Path, client_id: int, name: str, *, max_examples: int | None = None) -> str:
    """Create one client's key pair at ``path``; return the line for ``authorized_clients``.

    Args:
        path: where to write the private key.
        client_id: the client's id in the run.
        name: a readable name.
        max_examples: the most examples the client may claim, declared on its line.

    Raises:
        ConfigError: if ``path`` exists, or the id, name or ``max_examples`` is invalid.
    """
    file = Path(path)
    if client_id < 0:
        raise ConfigError(f"client ids are >= 0, got {client_id}")
    if file.exists():
        raise ConfigError(f"{str(file)!r} exists; keys are never overwritten")
    key = Ed25519PrivateKey.generate()
    line = authorized_line(client_id, _check_name(name), key.public_key(), max_examples=max_examples)
    _write(file, _pem_key(key), secret=True)
    return line
