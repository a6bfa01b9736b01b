"""Every command, given a bad input, says what is wrong in one ``error:`` line and exits
non-zero; only a bug (an error that is not the packages' own) shows a traceback.

Each case runs the real entry point as a subprocess against a closed port, with its own
``SLMOPS_KAFKA_HOME``, so no case can reach (or stop) a broker someone else is using.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

from slmops import cli as slmops_cli
from streams.events import ModelVersion
from streams.kafka.clients import EventProducer
from tests.support.sample_events import sample

CLOSED = "127.0.0.1:1"
USAGE = 2  # argparse's own exit status for a bad command line


def _run(argv: list[str], home: Path, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SLMOPS_")}
    return subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=Path(__file__).resolve().parents[2],
        env=clean | {"SLMOPS_KAFKA_HOME": str(home), "SLMOPS_BOOTSTRAP_SERVERS": CLOSED} | env,
    )


def slmops(*args: str, home: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return _run([sys.executable, "-m", "slmops", *args], home, **env)


@pytest.fixture
def files(tmp_path: Path) -> Path:
    (tmp_path / "garbage.txt").write_text("garbage {{{\n")
    (tmp_path / "binary.bin").write_bytes(b"\xff\xfe\x00\x01")
    (tmp_path / "kafka").mkdir()
    return tmp_path


# (argv with {d} for the files folder, exit code, text the error line holds). One or more per
# command; "closed port" cases give the broker a short timeout where the command has one.
CASES: list[tuple[str, int, str]] = [
    ("kafka up --port 70000", 1, "kafka_port (its flag or SLMOPS_KAFKA_PORT)"),
    ("kafka down --port 0", 1, "kafka_port (its flag or SLMOPS_KAFKA_PORT)"),
    ("kafka status --port abc", USAGE, "argument --port: invalid int value"),
    ("topics create --wait 0.5", 1, f"no Kafka broker answered at {CLOSED}"),
    ("topics create --replication-factor 0", USAGE, "must be at least 1"),
    ("topics list --wait 0.5", 1, f"no Kafka broker answered at {CLOSED}"),
    ("publish feedback {d}/missing.jsonl", 1, "cannot read {d}/missing.jsonl: no such file"),
    ("publish feedback {d}", 1, "it is a directory"),
    ("publish feedback {d}/binary.bin", 1, "line 1 is not UTF-8 text"),
    ("publish weather {d}/garbage.txt", 1, "unknown event type 'weather'"),
    ("publish feedback {d}/garbage.txt --partial --wait 0.5", 1, "no Kafka broker answered"),
    ("publish feedback {d}/garbage.txt --max-record-bytes 0", USAGE, "must be at least 1"),
    ("tail feedback --idle-timeout 0.5", 1, f"no Kafka broker answered at {CLOSED}"),
    ("tail weather", 1, "unknown topic or event type 'weather'"),
    ("tail feedback --max -1", USAGE, "argument --max: must not be negative"),
    ("rollout start intent --to v2", 1, f"no Kafka broker answered at {CLOSED}"),
    ("rollout start intent --to v2 --stages a,b", USAGE, "--stages takes percents"),
    ("rollout pause r1", 1, f"no Kafka broker answered at {CLOSED}"),
    ("rollout resume r1", 1, f"no Kafka broker answered at {CLOSED}"),
    ("rollout abort r1", 1, f"no Kafka broker answered at {CLOSED}"),
    ("rollout promote r1", 1, f"no Kafka broker answered at {CLOSED}"),
    ("rollout status", 1, f"no Kafka broker answered at {CLOSED}"),
    ("models list", 1, f"no Kafka broker answered at {CLOSED}"),
    ("models show intent", 1, f"no Kafka broker answered at {CLOSED}"),
    ("models where intent", USAGE, "expected MODEL@VERSION"),
    ("models where intent@v1 --at yesterday", USAGE, "not an ISO 8601 time"),
    ("devices list --idle-timeout -1", USAGE, "must not be negative"),
    ("devices history d1", 1, f"no Kafka broker answered at {CLOSED}"),
    ("control worker --window-s -5", 1, "window_s (its flag or SLMOPS_WINDOW_S)"),
    ("control worker --rollout-stages x", USAGE, "expected numbers like 5,25,100"),
    ("optimize --model {d}/none --recipe {d}/r.toml --data {d}/d.jsonl --out {d}/o", 1,
     "cannot load model"),
    ("optimizer worker --signing-key {d}/missing.key", 1, "cannot read the signing key"),
    ("optimizer worker --signing-key {d}/garbage.txt", 1, "not a base64 raw ed25519"),
    ("optimizer worker --max-requests 0", USAGE, "must be at least 1"),
    ("edge run --device-id d1 --trusted-keys-file {d}/missing", 1, "cannot read {d}/missing"),
    ("edge run --device-id d1 --hardware-profile nosuch", 1, "unknown profile 'nosuch'"),
    ("edge run --device-id d1 --label novalue", USAGE, "expected KEY=VALUE"),
    ("edge run --device-id d1 --http-port 99999", 1, "http_port (its flag or SLMOPS_HTTP_PORT)"),
    ("edge fleet --devices 0", USAGE, "must be at least 1"),
    ("edge fleet --cohorts ,", USAGE, "name at least one cohort"),
    ("demo --devices 0", USAGE, "must be at least 1"),
]  # fmt: skip


@pytest.mark.parametrize(("argv", "code", "expected"), CASES, ids=[c[0] for c in CASES])
def test_a_bad_input_is_one_error_line_and_no_traceback(files, argv, code, expected):
    result = slmops(*argv.format(d=files).split(), home=files / "kafka")
    assert result.returncode == code, result.stderr
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1, result.stderr
    assert expected.format(d=files) in errors[0]
    assert "Traceback" not in result.stderr


def test_the_worker_module_entry_point_reports_settings_errors_too(files):
    result = _run([sys.executable, "-m", "streams.control", "--window-s", "-5"], files / "kafka")
    assert result.returncode == 1
    assert "python -m streams.control: error: invalid setting(s): window_s" in result.stderr
    assert "Traceback" not in result.stderr


def test_debug_shows_the_traceback_of_a_user_error(files):
    flagged = slmops("--debug", "publish", "feedback", str(files / "missing"), home=files)
    by_env = slmops("publish", "feedback", str(files / "missing"), home=files, SLMOPS_DEBUG="1")
    for result in (flagged, by_env):
        assert result.returncode == 1
        assert "Traceback" in result.stderr
        assert "FileAccessError: cannot read" in result.stderr


def test_a_bug_keeps_its_traceback(monkeypatch):
    def broken(args: argparse.Namespace) -> int:
        raise KeyError("not a user error")

    monkeypatch.setattr(slmops_cli, "cmd_schemas", broken)
    with pytest.raises(KeyError, match="not a user error"):
        slmops_cli.main(["schemas"])


@pytest.mark.integration
def test_an_unknown_model_or_version_is_refused_before_any_command_is_sent(kafka_conn, files):
    async def register() -> None:
        async with EventProducer(kafka_conn) as producer:
            await producer.send_and_wait(sample(ModelVersion))  # intent v2

    asyncio.run(register())
    env = {
        "SLMOPS_BOOTSTRAP_SERVERS": kafka_conn.bootstrap_servers,
        "SLMOPS_TOPIC_PREFIX": kafka_conn.topic_prefix,
    }
    for argv, expected in (
        ("rollout start intent --to v9", "model 'intent' has no version 'v9'; registered: v2"),
        ("rollout start weather --to v1", "model 'weather' has no version on the model registry"),
        ("models show weather --idle-timeout 0.5", "no versions of model 'weather'"),
        ("devices history nobody --idle-timeout 0.5", "no status of device 'nobody'"),
        ("rollout status nothing", "no rollout 'nothing' on the rollouts topic"),
    ):
        result = slmops(*argv.split(), home=files, **env)
        assert result.returncode == 1, (argv, result.stderr)
        assert f"slmops: error: {expected}" in result.stderr, argv
        assert "Traceback" not in result.stderr
