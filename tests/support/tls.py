"""A private CA and broker certificates made with `cryptography`, for brokers with TLS
listeners started by the tests."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import ipaddress
from collections.abc import Iterator, Mapping
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_ca(cn: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = _key()
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(_name(cn))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def make_server_cert(
    ca_key: ec.EllipticCurvePrivateKey, ca: x509.Certificate
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = _key()
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("localhost"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return key, cert


def pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def write_keystore(home: Path) -> tuple[Path, Path]:
    """(broker keystore PEM, CA PEM) under ``home``: a new CA and a certificate for
    localhost and 127.0.0.1 that it signed."""
    ca_key, ca = make_ca("slmops test CA")
    server_key, server = make_server_cert(ca_key, ca)
    keystore = home / "broker.pem"
    keystore.write_bytes(
        server_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        + pem(server)
        + pem(ca)
    )
    ca_file = home / "ca.pem"
    ca_file.write_bytes(pem(ca))
    return keystore, ca_file


@dataclasses.dataclass(frozen=True)
class SecureBroker:
    ca: Path
    plain: int
    ssl: int
    sasl: int


@contextlib.contextmanager
def secure_kafka(
    home: Path, users: Mapping[str, str], *, authorizer: bool = False
) -> Iterator[SecureBroker]:
    """A second local Kafka (the session's jars) with SSL and SASL_SSL (SCRAM-SHA-256)
    listeners for ``users``, optionally with the StandardAuthorizer; stopped after."""
    from slmops.local_kafka import CHECKOUT, LocalKafka, LocalTls
    from tests.support.ports import free_ports

    keystore, ca_file = write_keystore(home)
    shared = LocalKafka(home=CHECKOUT / ".local" / "kafka")
    shared.fetch()  # the jars, shared with the session's broker
    plain, controller, ssl_port, sasl_port = free_ports(4)
    kafka = LocalKafka(
        home=home / "kafka",
        port=plain,
        controller_port=controller,
        libs_dir=shared.libs,
        tls=LocalTls(
            keystore_pem=keystore,
            ssl_port=ssl_port,
            sasl_ssl_port=sasl_port,
            scram_users=dict(users),
            authorizer=authorizer,
        ),
    )
    kafka.up()
    try:
        yield SecureBroker(ca=ca_file, plain=plain, ssl=ssl_port, sasl=sasl_port)
    finally:
        kafka.down()
