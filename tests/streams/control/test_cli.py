from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import subprocess
import sys

import pytest

from slmops.cli import main
from streams.control.cli import register, settings_from_args
from streams.events import Artifact, DeviceState, DeviceStatus, ModelVersion, Task
from streams.kafka.clients import EventProducer
from streams.kafka.errors import SettingsError


def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    return parser.parse_args(list(argv))


def test_flags_override_the_environment(monkeypatch):
    monkeypatch.setenv("SLMOPS_WINDOW_S", "30")
    monkeypatch.setenv("SLMOPS_RULES__MIN_QUALITY", "0.7")
    monkeypatch.setenv("SLMOPS_PRIVACY_K", "9")
    s = settings_from_args(_parse("control", "worker", "--window-s", "2", "--max-p95-ms", "80"))
    assert s.window_s == 2.0
    assert s.privacy_k == 9
    assert s.rules.min_quality == 0.7
    assert s.rules.max_p95_latency_ms == 80.0
    assert s.resolved_app_id == "slmops-control"


def test_invalid_thresholds_are_refused_naming_the_field_and_its_variable():
    with pytest.raises(
        SettingsError, match=r"rules\.min_quality \(its flag or SLMOPS_RULES__MIN_QUALITY\)"
    ):
        settings_from_args(_parse("control", "worker", "--min-quality", "2"))


def test_the_cli_module_imports_only_argparse():
    code = (
        "import sys, streams.control.cli; "
        "heavy = ('faust', 'prometheus_client', 'streams.control.app'); "
        "print([m for m in heavy if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


async def _publish(conn) -> None:
    art = Artifact(
        uri="file:///v2", sha256=hashlib.sha256(b"v2").hexdigest(), size_bytes=1, precision="int8"
    )
    async with EventProducer(conn) as p:
        await p.send_many(
            [
                ModelVersion(model_id="intent", version="v2", task=Task.CLASSIFY, artifacts=(art,)),
                DeviceStatus(
                    device_id="d7",
                    cohort="eu",
                    hardware_profile="arm64",
                    state=DeviceState.DEGRADED,
                    model_id="intent",
                    model_version="v2",
                    last_error="warm-up failed",
                ),
            ]
        )


@pytest.mark.integration
def test_models_and_devices_commands_read_the_compacted_topics(kafka_conn, capsys):
    asyncio.run(_publish(kafka_conn))
    conn_args = [
        "--bootstrap-servers",
        kafka_conn.bootstrap_servers,
        "--topic-prefix",
        kafka_conn.topic_prefix,
        "--idle-timeout",
        "1",
    ]
    assert main(["models", "list", "--json", *conn_args]) == 0
    (model,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert (model["model_id"], model["version"], model["precisions"]) == ("intent", "v2", ["int8"])
    assert model["devices_serving"] == 1
    assert main(["devices", "list", "--json", *conn_args]) == 0
    (device,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert (device["device_id"], device["state"], device["last_error"]) == (
        "d7",
        "DEGRADED",
        "warm-up failed",
    )
    assert main(["models", "show", "intent", *conn_args]) == 0
    assert json.loads(capsys.readouterr().out)[0]["version"] == "v2"


def test_generation_gates_and_rules_are_set_from_flags():
    s = settings_from_args(
        _parse(
            "control",
            "worker",
            "--max-p95-ttft-ms",
            "900",
            "--min-mean-logprob",
            "-1.5",
            "--rollout-max-p95-ttft-ms",
            "800",
            "--rollout-max-logprob-drop",
            "0.2",
        )
    )
    assert s.rules.max_p95_ttft_ms == 900.0
    assert s.rules.min_mean_logprob == -1.5
    gates = s.rollout.policy().gates
    assert gates.max_p95_ttft_ms == 800.0
    assert gates.max_logprob_drop == 0.2


@pytest.mark.integration
def test_yank_republishes_the_version_signed_and_models_list_shows_it(kafka_conn, capsys, tmp_path):
    from streams.events.artifact import key_id, new_signing_key, private_key_to_text
    from streams.events.record_signing import verify_record
    from streams.kafka.clients import EventConsumer, Received

    asyncio.run(_publish(kafka_conn))
    key = new_signing_key()
    key_file = tmp_path / "release.key"
    key_file.write_text(private_key_to_text(key))
    conn_args = [
        *("--bootstrap-servers", kafka_conn.bootstrap_servers),
        *("--topic-prefix", kafka_conn.topic_prefix, "--idle-timeout", "1"),
    ]
    assert main(["models", "yank", "intent@v9", "--reason", "x", *conn_args]) == 1
    assert "no version 'v9' of model 'intent'" in capsys.readouterr().err
    argv = ["models", "yank", "intent@v2", "--reason", "wrong labels", "--signing-key"]
    assert main([*argv, str(key_file), *conn_args]) == 0
    assert capsys.readouterr().out.strip() == "yanked intent@v2 (signed): wrong labels"
    assert main(["models", "list", "--json", *conn_args]) == 0
    (model,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert model["yanked"] == "wrong labels"

    async def signed_by() -> list[str]:
        topic = kafka_conn.catalog().topic_for(ModelVersion)
        async with EventConsumer(kafka_conn, [topic], name="check") as consumer:
            records = await consumer.snapshot()
        trusted = {key_id(key.public_key()): key.public_key()}
        return [
            verify_record(r.value, r.headers, trusted)
            for r in records
            if isinstance(r, Received) and getattr(r.event, "yanked", None)
        ]

    assert asyncio.run(signed_by()) == [key_id(key.public_key())]
