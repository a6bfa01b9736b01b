from __future__ import annotations

import faust
from pydantic import SecretStr

from streams.control.app import faust_credentials
from streams.kafka.connection import KafkaConnection


def test_plaintext_needs_no_credentials():
    assert faust_credentials(KafkaConnection()) is None


def test_tls_becomes_ssl_credentials_with_the_connections_context():
    creds = faust_credentials(KafkaConnection(security_protocol="SSL"))
    assert isinstance(creds, faust.SSLCredentials)
    assert creds.context.check_hostname is True


def test_sasl_over_tls_keeps_mechanism_user_and_tls():
    creds = faust_credentials(
        KafkaConnection(
            security_protocol="SASL_SSL",
            sasl_mechanism="SCRAM-SHA-512",
            sasl_username="control",
            sasl_password=SecretStr("pw"),
        )
    )
    assert isinstance(creds, faust.SASLCredentials)
    assert creds.mechanism.value == "SCRAM-SHA-512"
    assert (creds.username, creds.password) == ("control", "pw")
    assert creds.ssl_context is not None
    assert creds.protocol.value == "SASL_SSL"


def test_sasl_plaintext_has_no_tls_context():
    creds = faust_credentials(
        KafkaConnection(
            security_protocol="SASL_PLAINTEXT",
            sasl_mechanism="PLAIN",
            sasl_username="u",
            sasl_password=SecretStr("p"),
        )
    )
    assert isinstance(creds, faust.SASLCredentials)
    assert creds.ssl_context is None
    assert creds.protocol.value == "SASL_PLAINTEXT"
