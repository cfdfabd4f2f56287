"""Secure mode's pure parts: secret files, certificates, password hashes, the access table,
and the settings that point a component at the secure stack (the servers are in
tests/secure)."""

from __future__ import annotations

import base64
import hashlib
import socket
import ssl
import stat
import threading

import pytest

from recommender.contracts import CASSANDRA_TABLES
from recommender.settings import KafkaSettings, Settings, StackSettings, as_env
from recommender.stack import access
from recommender.stack.connect import as_account, env_lines
from recommender.stack.secrets import ES_PBKDF2_ITERATIONS, StackSecrets, es_password_hash


@pytest.fixture
def stack(tmp_path) -> StackSettings:
    stack = StackSettings(secure=True, state_dir=tmp_path / "plain",
                          secure_state_dir=tmp_path / "secure")
    StackSecrets.of(stack).ensure(access.ACCOUNTS)
    return stack


def test_secrets_are_private_and_generated_once(stack: StackSettings):
    secrets = StackSecrets.of(stack)
    assert stat.S_IMODE(secrets.dir.stat().st_mode) == 0o700
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in secrets.dir.iterdir())
    before = {a: secrets.password(a) for a in access.ACCOUNTS}
    secrets.ensure(access.ACCOUNTS)
    assert before == {a: secrets.password(a) for a in access.ACCOUNTS}
    assert len(set(before.values())) == len(before)


def test_node_certificate_serves_tls_to_clients_trusting_the_ca(stack: StackSettings):
    secrets = StackSecrets.of(stack)
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(secrets.node_cert, secrets.node_key)
    with socket.create_server(("127.0.0.1", 0)) as listener:
        accepted = threading.Thread(target=lambda: server.wrap_socket(
            listener.accept()[0], server_side=True).close())
        accepted.start()
        client = ssl.create_default_context(cafile=secrets.ca_cert)
        with socket.create_connection(listener.getsockname()) as raw, \
                client.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            assert tls.getpeercert()["subject"] == ((("commonName", "recommender-node"),),)
        accepted.join()


def test_elasticsearch_password_hash_is_its_pbkdf2_format():
    salt = b"s" * 32
    prefix, salt64, key64 = es_password_hash("secret", salt).split("$")
    assert prefix == f"{{PBKDF2}}{ES_PBKDF2_ITERATIONS}"
    assert base64.b64decode(salt64) == salt
    assert base64.b64decode(key64) == hashlib.pbkdf2_hmac("sha512", b"secret", salt,
                                                           ES_PBKDF2_ITERATIONS, 32)


def test_the_secure_stack_has_its_own_ports_and_directory(stack: StackSettings):
    active = stack.active()
    assert active.kafka_port == StackSettings().kafka_port + 10000
    assert active.state_dir == stack.secure_state_dir
    assert active.active() == active
    assert StackSettings().active() == StackSettings()


def test_access_table_names_real_tables_topics_and_groups():
    kafka_fields = set(KafkaSettings.model_fields)
    for c in access.COMPONENTS:
        assert set(c.tables) <= set(CASSANDRA_TABLES), c.name
        assert set(c.topics) <= kafka_fields and set(c.groups) <= kafka_fields, c.name
    assert "GRANT SELECT ON TABLE ks.ratings TO api" in access.cassandra_grants("ks")
    assert access.es_user_roles()["superuser"] == [access.ADMIN]


def test_a_component_reads_its_secrets_from_files_and_passes_on_only_paths(stack, monkeypatch):
    ingest = as_account(Settings(stack=stack), stack, "ingest")
    secrets = StackSecrets.of(stack)
    password = secrets.password("ingest")
    assert ingest.kafka.sasl_password.get_secret_value() == password
    assert ingest.cassandra.password.get_secret_value() == password
    child = as_env(ingest, base={})
    assert password not in child.values()
    assert child["RECOMMENDER_CASSANDRA__PASSWORD_FILE"] == str(secrets.password_file("ingest"))
    for key, value in child.items():
        monkeypatch.setenv(key, value)
    assert Settings() == ingest


def test_stack_env_prints_paths_never_secrets(stack: StackSettings):
    lines = "\n".join(env_lines(stack, "api"))
    secrets = StackSecrets.of(stack)
    assert f"RECOMMENDER_API__API_KEY_FILE={secrets.api_key_file}" in lines
    assert secrets.password("api") not in lines
    assert secrets.api_key_file.read_text() not in lines
    with pytest.raises(ValueError, match="no component"):
        env_lines(stack, "ingset")


def test_a_missing_secret_file_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="password_file: cannot read"):
        Settings(cassandra={"password_file": tmp_path / "absent"})
