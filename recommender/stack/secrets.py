"""The secure stack's secrets: a local CA, the node certificate, and one password per account.

Generated at the first secure start into ``<secure state dir>/secrets`` (a 0700 directory,
every file 0600) and never written anywhere else: the servers get hashes or copies in their
own config directories, and clients are pointed at the files (``*_FILE`` settings), so no
secret ever appears in the repository, on a command line or in a log.

Example::

    secrets = StackSecrets(stack.state_dir / "secrets")
    secrets.ensure(["admin", "ingest"])
    secrets.password("ingest")          # the value, for the code that must send it
    secrets.password_file("ingest")     # the path, for everything else
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import ipaddress
import os
import secrets
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from recommender.errors import StackError

if TYPE_CHECKING:
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey, RSAPublicKey

    from recommender.settings import StackSettings

NODE_NAME = "recommender-node"  # subject CN of the servers' certificate (Kafka's mTLS principal)
NODE_HOSTS = ("localhost", "127.0.0.1")  # what clients dial: both are in the certificate
CA_DAYS = 3650
NODE_DAYS = 825
ES_PBKDF2_ITERATIONS = 10_000


class StackSecrets:
    """Paths of the secrets, and their generation when missing (idempotent)."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory

    @classmethod
    def of(cls, stack: StackSettings) -> StackSecrets:
        """The secrets of the secure stack these settings address."""
        return cls(stack.active().secure_state_dir / "secrets")

    @property
    def ca_cert(self) -> Path:
        return self.dir / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.dir / "ca.key"

    @property
    def node_cert(self) -> Path:
        return self.dir / "node.crt"

    @property
    def node_key(self) -> Path:
        return self.dir / "node.key"

    @property
    def node_keystore(self) -> Path:
        """Key and certificate chain in one PEM file, the form Kafka's PEM keystore reads."""
        return self.dir / "node-keystore.pem"

    @property
    def api_key_file(self) -> Path:
        return self.dir / "api.key"

    def password_file(self, account: str) -> Path:
        return self.dir / f"{account}.password"

    def password(self, account: str) -> str:
        try:
            return self.password_file(account).read_text().strip()
        except FileNotFoundError:
            raise StackError(f"no secret for {account!r} in {self.dir}: start the secure stack "
                             "(`recommender stack up --secure`) to generate it") from None

    def ensure(self, accounts: Iterable[str]) -> None:
        """Create the directory, the CA, the node certificate and every missing password."""
        self.dir.mkdir(parents=True, exist_ok=True)
        self.dir.chmod(0o700)
        if not (self.ca_cert.exists() and self.ca_key.exists()):
            self.make_ca()
        if not (self.node_cert.exists() and self.node_keystore.exists()):
            self.make_node_certificate()
        for account in accounts:
            if not self.password_file(account).exists():
                write_private(self.password_file(account), new_password())
        if not self.api_key_file.exists():
            write_private(self.api_key_file, new_password())

    def make_ca(self) -> None:
        key = new_key()
        name = subject("recommender local CA")
        cert = certificate(name, name, key.public_key(), key, CA_DAYS, ca=True)
        write_private(self.ca_key, key_pem(key))
        write_private(self.ca_cert, cert_pem(cert))

    def make_node_certificate(self) -> None:
        """A server certificate for localhost/127.0.0.1, also valid as a TLS client
        certificate (the Kafka broker authenticates to its controller with it)."""
        from cryptography import x509
        from cryptography.hazmat.primitives import serialization

        ca_key = serialization.load_pem_private_key(self.ca_key.read_bytes(), password=None)
        ca_cert = x509.load_pem_x509_certificate(self.ca_cert.read_bytes())
        key = new_key()
        cert = certificate(ca_cert.subject, subject(NODE_NAME), key.public_key(), ca_key,
                           NODE_DAYS, ca=False)
        write_private(self.node_key, key_pem(key))
        write_private(self.node_cert, cert_pem(cert) + cert_pem(ca_cert))
        write_private(self.node_keystore, key_pem(key) + cert_pem(cert) + cert_pem(ca_cert))


def new_password() -> str:
    """192 random bits, URL-safe: fits JAAS, CQL and SCRAM strings without quoting."""
    return secrets.token_urlsafe(24)


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to a file only its owner can read, whatever the umask."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    path.chmod(0o600)


def es_password_hash(password: str, salt: bytes | None = None) -> str:
    """The ``{PBKDF2}`` hash Elasticsearch's file realm verifies: PBKDF2-HMAC-SHA512, 10,000
    iterations, 32-byte salt and key, both base64 (its ``Hasher.PBKDF2`` format)."""
    salt = salt or os.urandom(32)
    key = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, ES_PBKDF2_ITERATIONS, 32)
    return (f"{{PBKDF2}}{ES_PBKDF2_ITERATIONS}${base64.b64encode(salt).decode()}"
            f"${base64.b64encode(key).decode()}")


# --- X.509 with the cryptography library ------------------------------------------------------

def new_key() -> RSAPrivateKey:
    from cryptography.hazmat.primitives.asymmetric import rsa

    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def subject(common_name: str) -> x509.Name:
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def certificate(issuer: x509.Name, name: x509.Name, public_key: RSAPublicKey,
                signing_key: RSAPrivateKey, days: int, *, ca: bool) -> x509.Certificate:
    """A CA certificate, or a leaf for ``NODE_HOSTS`` usable for TLS server and client auth."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder().issuer_name(issuer).subject_name(name)
        .public_key(public_key).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=0 if ca else None),
                       critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )
    extensions = ca_extensions() if ca else leaf_extensions(signing_key)
    for extension, critical in extensions:
        builder = builder.add_extension(extension, critical=critical)
    return builder.sign(signing_key, hashes.SHA256())


def ca_extensions() -> list[tuple[x509.ExtensionType, bool]]:
    from cryptography import x509

    usage = x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                          content_commitment=False, key_encipherment=False,
                          data_encipherment=False, key_agreement=False, encipher_only=False,
                          decipher_only=False)
    return [(usage, True)]


def leaf_extensions(ca_key: RSAPrivateKey) -> list[tuple[x509.ExtensionType, bool]]:
    from cryptography import x509
    from cryptography.x509.oid import ExtendedKeyUsageOID

    hosts: list[x509.GeneralName] = []
    for host in NODE_HOSTS:
        try:
            hosts.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            hosts.append(x509.DNSName(host))
    usage = x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                   ExtendedKeyUsageOID.CLIENT_AUTH])
    issuer = x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key())
    return [(x509.SubjectAlternativeName(hosts), False), (usage, False), (issuer, False)]


def key_pem(key: RSAPrivateKey) -> str:
    """Unencrypted PKCS#8, the one key format Kafka, Elasticsearch and Python all read."""
    from cryptography.hazmat.primitives import serialization

    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def cert_pem(cert: x509.Certificate) -> str:
    from cryptography.hazmat.primitives import serialization

    return cert.public_bytes(serialization.Encoding.PEM).decode()
