"""``slmops acls``: what it prints, and the Java client settings ``apply`` hands AclCommand."""

from __future__ import annotations

import argparse
import json
import shlex
from pathlib import Path

import pytest
from pydantic import SecretStr

from slmops import cli
from slmops.acls import AclCommandError, client_properties, holders, role_principal
from streams.events.acls import ROLES, matrix_rows
from streams.events.topics import Catalog
from streams.kafka.connection import KafkaConnection


def test_holders_default_to_one_principal_per_role() -> None:
    got = holders([role_principal("device=d1"), role_principal("device=User:d2")])
    assert got["device"] == ["User:d1", "User:d2"]
    assert got["publisher"] == ["User:slmops-publisher"]
    assert list(got) == list(ROLES)


@pytest.mark.parametrize("flag", ["device", "admin=User:x", "device=", "device=User:a b"])
def test_a_bad_principal_flag_is_a_usage_error(flag: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        role_principal(flag)


def test_properties_for_scram_over_tls_quote_the_password(tmp_path: Path) -> None:
    conn = KafkaConnection(
        security_protocol="SASL_SSL",
        ssl_cafile=tmp_path / "ca.pem",
        ssl_check_hostname=False,
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username="admin",
        sasl_password=SecretStr('p"w\\d'),
    )
    props = dict(line.split("=", 1) for line in client_properties(conn).splitlines())
    assert props["security.protocol"] == "SASL_SSL"
    assert props["ssl.truststore.type"] == "PEM"
    assert props["ssl.truststore.location"] == str(tmp_path / "ca.pem")
    assert props["ssl.endpoint.identification.algorithm"] == ""
    assert props["sasl.mechanism"] == "SCRAM-SHA-512"
    assert props["sasl.jaas.config"] == (
        "org.apache.kafka.common.security.scram.ScramLoginModule required "
        'username="admin" password="p\\"w\\\\d";'
    )


def test_plaintext_properties_say_only_the_protocol() -> None:
    assert client_properties(KafkaConnection()) == "security.protocol=PLAINTEXT\n"


def test_plain_sasl_uses_the_plain_login_module() -> None:
    conn = KafkaConnection(
        security_protocol="SASL_PLAINTEXT",
        sasl_mechanism="PLAIN",
        sasl_username="u",
        sasl_password=SecretStr("p"),
    )
    assert "PlainLoginModule required" in client_properties(conn)


def test_a_client_certificate_is_refused_with_the_way_around(tmp_path: Path) -> None:
    conn = KafkaConnection(
        security_protocol="SSL", ssl_certfile=tmp_path / "c.pem", ssl_keyfile=tmp_path / "k.pem"
    )
    with pytest.raises(AclCommandError, match="--format commands"):
        client_properties(conn)


def test_show_prints_the_matrix(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["acls", "show", "--topic-prefix", "eu"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["role", "resource", "pattern", "operations"]
    assert len(out) == 1 + len(matrix_rows(Catalog("eu")))
    assert any(line.split()[:3] == ["device", "topic", "eu.rollouts"] for line in out)


def test_show_commands_are_kafka_acls_invocations(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["acls", "show", "--format", "commands", "--principal", "device=User:d1"]
    assert cli.main([*argv, "--bootstrap-servers", "k:9093"]) == 0
    lines = capsys.readouterr().out.splitlines()
    words = [shlex.split(line) for line in lines]
    assert all(w[:3] == ["kafka-acls.sh", "--bootstrap-server", "k:9093"] for w in words)
    device = [w for w in words if "User:d1" in w]
    assert len(device) == 2
    assert not any("User:slmops-device" in w for w in words)


def test_show_json_lists_roles_and_bindings(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["acls", "show", "--format", "json", "--principal", "publisher=User:crm"]
    assert cli.main([*argv, "--control-app-id", "ctl"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [r["role"] for r in doc["roles"]] == list(ROLES)
    publisher = [b for b in doc["bindings"] if b["role"] == "publisher"]
    assert publisher == [
        {
            "role": "publisher",
            "principals": ["User:crm"],
            "resource": "topic",
            "names": ["slmops.feedback"],
            "pattern": "literal",
            "operations": ["Write", "Describe"],
        }
    ]
    assert any(b["names"] == ["ctl-"] for b in doc["bindings"])
