from __future__ import annotations

import os
import subprocess
import sys

import pytest

from slmops.cli import build_parser, main


def run_cli(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "slmops", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    "argv",
    [[], ["kafka"], ["topics"], ["publish"], ["tail"], ["demo"], ["kafka", "up"], ["schemas"]],
)
def test_every_command_has_help(argv, capsys):
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args([*argv, "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "usage: slmops" in out


def test_help_is_printed_without_a_command(capsys):
    assert main([]) == 2
    assert "kafka" in capsys.readouterr().out


def test_unknown_event_type_is_a_clear_error():
    result = run_cli("publish", "weather", "--dry-run", stdin="{}")
    assert result.returncode == 1
    assert "unknown event type 'weather'" in result.stderr


def test_topics_list_offline_shows_the_catalog():
    result = run_cli("topics", "list", "--offline", "--topic-prefix", "acme")
    assert result.returncode == 0
    assert "acme.telemetry" in result.stdout
    assert "compact" in result.stdout


def test_schemas_lists_fingerprints():
    result = run_cli("schemas")
    assert result.returncode == 0
    assert "optimization-request" in result.stdout
    # Feedback: the spec's fingerprint, and the one Python's avro library writes for it.
    assert "e59d03e7f93020f8" in result.stdout
    assert (
        "a0125081de8687c2  also accepted: what avro (Python) 1.12 and apache-avro (Rust) 0.22"
        in result.stdout
    )


def test_a_reader_that_stops_early_is_exit_141_not_a_traceback(monkeypatch):
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone, as after `| head -1`
    with os.fdopen(write_end, "w", buffering=1) as stdout:  # each line written at once
        monkeypatch.setattr(sys, "stdout", stdout)
        assert main(["schemas"]) == 141


@pytest.mark.parametrize(
    "order",
    [
        ["publish", "feedback", "--dry-run", "{file}"],
        ["publish", "feedback", "{file}", "--dry-run"],
        ["publish", "--dry-run", "feedback", "{file}"],
    ],
)
def test_flags_and_positionals_go_in_any_order(order, tmp_path, capsys):
    record = tmp_path / "fb.json"
    record.write_text('{"model_id": "m", "outcomes": {"correct": 1}}\n')
    assert main([a.format(file=record) for a in order]) == 0
    assert f"dry run: 1 of 1 Feedback record(s) from {record} valid" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [
        ["models", "list"],
        ["models", "show", "intent"],
        ["devices", "list"],
        ["devices", "history", "d1"],
        ["models", "where", "intent@v1"],
        ["rollout", "status"],
    ],
)
def test_every_read_command_takes_output_json(argv):
    parser = build_parser()
    assert parser.parse_args([*argv, "--output", "json"]).json is True
    assert parser.parse_args([*argv, "--json", "--output", "table"]).json is False
    assert parser.parse_args(argv).json is False
