"""The cluster fields are defined once, and settings read the environment only through from_env.

Settings are built in library code and tests too (the demo's devices, fixtures); there a
developer's ``SLMOPS_*`` variables must change nothing.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from streams.kafka.connection import KafkaClientSettings, KafkaConnection
from tests.deploy.manifests import settings_classes

# A non-default value of every field but client_id, consistent together (SASL over mutual TLS).
NON_DEFAULT = {
    "bootstrap_servers": "broker-1:9093,broker-2:9093",
    "topic_prefix": "acme",
    "security_protocol": "SASL_SSL",
    "ssl_cafile": Path("/etc/slmops/ca.pem"),
    "ssl_certfile": Path("/etc/slmops/client.pem"),
    "ssl_keyfile": Path("/etc/slmops/client.key"),
    "ssl_check_hostname": False,
    "sasl_mechanism": "SCRAM-SHA-512",
    "sasl_username": "control",
    "sasl_password": SecretStr("s3cret"),
}


def test_every_connection_field_but_client_id_is_a_settings_field():
    assert set(KafkaConnection.model_fields) - {"client_id"} == set(NON_DEFAULT)
    assert set(NON_DEFAULT) <= set(KafkaClientSettings.model_fields)


def test_every_connection_field_but_client_id_is_settable_through_the_settings():
    default = KafkaConnection()
    assert all(getattr(default, k) != v for k, v in NON_DEFAULT.items())  # each one shows
    conn = KafkaClientSettings.model_validate(NON_DEFAULT).kafka_connection("control-1")
    assert {k: getattr(conn, k) for k in NON_DEFAULT} == NON_DEFAULT
    assert conn.client_id == "control-1"


def test_a_bootstrap_override_replaces_only_the_brokers():
    conn = KafkaClientSettings.model_validate(NON_DEFAULT).kafka_connection("cli", "127.0.0.1:9999")
    assert conn.bootstrap_servers == "127.0.0.1:9999"
    assert conn.sasl_username == "control"


def test_inconsistent_security_settings_fail_when_the_connection_is_built():
    settings = KafkaClientSettings(security_protocol="SASL_SSL")
    with pytest.raises(ValidationError, match="needs sasl_mechanism"):
        settings.kafka_connection("cli")


def _required(cls: type[KafkaClientSettings]) -> dict[str, str]:
    return {name: "x" for name, field in cls.model_fields.items() if field.is_required()}


SETTINGS_CLASSES = [pytest.param(cls, id=cls.__name__) for cls in settings_classes()]


@pytest.mark.parametrize("cls", SETTINGS_CLASSES)
def test_settings_built_in_code_ignore_the_environment(cls, monkeypatch):
    monkeypatch.setenv("SLMOPS_TOPIC_PREFIX", "from-the-shell")
    monkeypatch.setenv("SLMOPS_SSL_CHECK_HOSTNAME", "false")
    settings = cls(**_required(cls))
    assert (settings.topic_prefix, settings.ssl_check_hostname) == ("slmops", True)


@pytest.mark.parametrize("cls", SETTINGS_CLASSES)
def test_from_env_reads_the_environment_and_arguments_win(cls, monkeypatch):
    monkeypatch.setenv("SLMOPS_TOPIC_PREFIX", "from-the-shell")
    monkeypatch.setenv("SLMOPS_SSL_CHECK_HOSTNAME", "false")
    settings = cls.from_env(**_required(cls))
    assert (settings.topic_prefix, settings.ssl_check_hostname) == ("from-the-shell", False)
    assert settings.connection().ssl_check_hostname is False
    assert cls.from_env(**_required(cls), topic_prefix="from-a-flag").topic_prefix == (
        "from-a-flag"
    )


def test_reading_the_environment_ends_with_from_env(monkeypatch):
    monkeypatch.setenv("SLMOPS_TOPIC_PREFIX", "from-the-shell")
    with pytest.raises(ValidationError):
        KafkaClientSettings.from_env(security_protocol="TLS")
    assert KafkaClientSettings().topic_prefix == "slmops"


@pytest.mark.parametrize("cls", SETTINGS_CLASSES)
def test_an_unknown_keyword_is_refused(cls):
    with pytest.raises(ValidationError, match="topic_prefx"):
        cls(**_required(cls), topic_prefx="acme")


def test_only_a_class_with_a_nested_delimiter_has_nested_variables():
    assert KafkaClientSettings.env_name("ssl_check_hostname") == "SLMOPS_SSL_CHECK_HOSTNAME"
    with pytest.raises(KeyError):
        KafkaClientSettings.env_name("rules.min_quality")
