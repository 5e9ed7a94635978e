"""``sheaf keys``: a CA, a server certificate it signed, client key pairs; nothing overwritten."""

from __future__ import annotations

import ipaddress
import stat
from pathlib import Path

import pytest
from cryptography import x509

from sheaf.core.errors import ConfigError
from sheaf.deploy.auth import load_authorized_clients, load_identity
from sheaf.deploy.keys import init_keys, new_client_key


def test_init_writes_a_ca_a_signed_server_certificate_and_one_key_per_client(tmp_path: Path) -> None:
    made = init_keys(tmp_path / "keys", ["a", "b", "c"], hosts=["fl.example.org", "10.0.0.5"])
    ca = x509.load_pem_x509_certificate(made.ca_cert.read_bytes())
    server = x509.load_pem_x509_certificate(made.server_cert.read_bytes())
    server.verify_directly_issued_by(ca)
    names = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(names.get_values_for_type(x509.DNSName)) == {"localhost", "fl.example.org"}
    assert set(names.get_values_for_type(x509.IPAddress)) == {
        ipaddress.ip_address(h) for h in ("127.0.0.1", "10.0.0.5")
    }
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    for secret in [made.server_key, made.folder / "ca.key", *made.client_keys]:
        assert stat.S_IMODE(secret.stat().st_mode) == 0o600, secret
    clients = load_authorized_clients(made.authorized)
    by_id = {c.client_id: c for c in clients.values()}
    assert [by_id[i].name for i in range(3)] == ["a", "b", "c"]
    for client_id, path in enumerate(made.client_keys):
        assert load_identity(path).key_id == by_id[client_id].key_id


def test_keys_are_never_overwritten_and_names_are_checked(tmp_path: Path) -> None:
    init_keys(tmp_path / "keys", 1)
    with pytest.raises(ConfigError, match="already holds"):
        init_keys(tmp_path / "keys", 1)
    with pytest.raises(ConfigError, match="client name 'no spaces'"):
        init_keys(tmp_path / "other", ["no spaces"])
    with pytest.raises(ConfigError, match="distinct"):
        init_keys(tmp_path / "other", ["a", "a"])
    with pytest.raises(ConfigError, match="at least one client"):
        init_keys(tmp_path / "other", 0)


def test_a_client_can_make_its_own_key_and_send_only_its_public_line(tmp_path: Path) -> None:
    line = new_client_key(tmp_path / "me.key", 9, "clinic")
    (tmp_path / "authorized_clients").write_text(line + "\n")
    (client,) = load_authorized_clients(tmp_path / "authorized_clients").values()
    assert (client.client_id, client.name) == (9, "clinic")
    assert load_identity(tmp_path / "me.key").key_id == client.key_id
    with pytest.raises(ConfigError, match="never overwritten"):
        new_client_key(tmp_path / "me.key", 9, "clinic")
