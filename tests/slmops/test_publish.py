"""``slmops publish`` without a broker: input checks, refusals, exit codes, progress, ranges."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from slmops.publish import REFUSED, Outcome, Progress, line_ranges
from streams.events import Feedback
from streams.kafka.errors import SendFailedError
from streams.kafka.publish import Parsed, parse_events

BIG = {"model_id": "m", "examples": [{"text": "x" * 5000, "label": "a", "consent": True}]}


def run_cli(*args: str, stdin: str | bytes = "") -> subprocess.CompletedProcess[str]:
    data = stdin.encode() if isinstance(stdin, str) else stdin
    done = subprocess.run(
        [sys.executable, "-m", "slmops", *args],
        input=data,
        capture_output=True,
        timeout=60,
        check=False,
        # A closed port: nothing here may need a broker, and one that tries fails fast.
        env={
            **{k: v for k, v in os.environ.items() if not k.startswith("SLMOPS_")},
            "SLMOPS_BOOTSTRAP_SERVERS": "127.0.0.1:1",
        },
    )
    return subprocess.CompletedProcess(
        done.args, done.returncode, done.stdout.decode(), done.stderr.decode()
    )


def _lines(*objects: object) -> str:
    return "\n".join(json.dumps(o) for o in objects) + "\n"


def test_one_refused_line_sends_nothing_and_names_line_field_and_reason():
    text = _lines({"model_id": "m"}, {"model_id": "m", "score": 7}, {"model_id": "m"})
    result = run_cli("publish", "feedback", stdin=text)
    assert result.returncode == REFUSED, result.stderr
    assert "line 2: refused: score: must be <= 1.0" in result.stderr
    assert "sent nothing: 1 of 3 Feedback record(s) from stdin refused" in result.stderr
    assert "Traceback" not in result.stderr


def test_an_oversized_record_is_refused_before_anything_is_sent(tmp_path):
    source = tmp_path / "in.jsonl"
    source.write_text(_lines({"model_id": "m"}, BIG))
    result = run_cli("publish", "feedback", str(source), "--max-record-bytes", "4096")
    assert result.returncode == REFUSED, result.stderr
    assert "line 2: refused: encoded record is" in result.stderr
    assert "at most 4,096 fit in one Kafka message" in result.stderr


def test_dry_run_checks_everything_and_says_so():
    text = _lines({"model_id": "m"}, {"model_id": "m", "score": 7})
    result = run_cli("publish", "feedback", "--dry-run", stdin=text)
    assert result.returncode == REFUSED
    assert "dry run: 1 of 2 Feedback record(s) from stdin valid, 1 refused" in result.stderr
    ok = run_cli("publish", "feedback", "--dry-run", stdin=_lines({"model_id": "m"}))
    assert ok.returncode == 0, ok.stderr
    assert "dry run: 1 of 1" in ok.stderr


def test_the_refused_list_is_capped_and_counted_and_the_report_has_them_all(tmp_path):
    text = _lines(*({"model_id": "m", "score": 2} for _ in range(30)))
    report = tmp_path / "report.json"
    result = run_cli(
        "publish", "feedback", "--dry-run", "--show-refused", "5", "--report", str(report),
        stdin=text,
    )  # fmt: skip
    assert result.returncode == REFUSED
    assert result.stderr.count(": refused: ") == 5
    assert "... and 25 more refused line(s)" in result.stderr
    written = json.loads(report.read_text())
    assert [r["line"] for r in written["refused"]] == list(range(1, 31))
    assert {r["field"] for r in written["refused"]} == {"score"}
    assert written["sent"] == []
    assert written["exit_code"] == REFUSED


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda d: str(d / "missing.jsonl"), "missing.jsonl: no such file"),
        (lambda d: str(d), "it is a directory"),
    ],
)
def test_an_unreadable_input_is_one_error_line(tmp_path, make, expected):
    result = run_cli("publish", "feedback", make(tmp_path))
    assert result.returncode == 1
    assert "slmops: error: cannot read" in result.stderr
    assert expected in result.stderr
    assert "Traceback" not in result.stderr


def test_binary_input_names_the_line_that_is_not_text():
    result = run_cli("publish", "feedback", "-", stdin=b'{"model_id": "m"}\n\xff\xfe\n')
    assert result.returncode == 1
    assert "line 2 is not UTF-8 text" in result.stderr
    assert "Traceback" not in result.stderr


def test_partial_with_no_broker_fails_before_sending():
    text = _lines({"model_id": "m"}, {"model_id": "m", "score": 7})
    result = run_cli("publish", "feedback", "--partial", "--wait", "0.5", stdin=text)
    assert result.returncode == 1
    assert "slmops: error: no Kafka broker answered at 127.0.0.1:1" in result.stderr
    assert "Traceback" not in result.stderr


def test_progress_speaks_at_most_once_per_interval():
    said: list[str] = []
    now = [0.0]
    progress = Progress(said.append, interval_s=2.0, clock=lambda: now[0])
    for step in range(100):
        now[0] = step * 0.1  # ten seconds in all
        progress("at {}", step)
    assert said == ["at 20", "at 40", "at 60", "at 80"]


def test_line_ranges_are_compact_and_capped():
    assert line_ranges([5, 1, 2, 3, 7, 8]) == "1-3,5,7-8"
    assert line_ranges([]) == "none"
    assert line_ranges(range(1, 20, 2), limit=3) == "1,3,5,... (7 more ranges)"


def _valid(count: int) -> list[Parsed]:
    text = _lines(*({"model_id": "m", "outcomes": {"n": i}} for i in range(count)))
    return list(parse_events(text, Feedback, producer="cli"))


def test_a_send_that_fails_part_way_books_every_line():
    records = _valid(5)
    outcome = Outcome("in.jsonl", "slmops.feedback", "Feedback", "all-or-nothing")
    outcome.valid = records
    lost = SendFailedError("slmops.feedback", "127.0.0.1:9092", "broker went away")
    # Lines 1-2 acknowledged, 3 failed, 4-5 never handed to the producer.
    outcome.settle(records[:3], [None, None, lost])
    report = outcome.report()
    assert [s["line"] for s in report["sent"]] == [1, 2]
    assert [s["event_id"] for s in report["sent"]] == [
        p.event.event_id for p in records[:2] if p.event is not None
    ]
    assert report["failed"] == [{"line": 3, "reason": str(lost)}]
    assert report["not_sent"] == [3, 4, 5]
    assert outcome.error == str(lost)


def test_a_result_that_is_not_a_kafka_error_is_raised():
    records = _valid(1)
    outcome = Outcome("in.jsonl", "slmops.feedback", "Feedback", "partial")
    with pytest.raises(ZeroDivisionError):
        outcome.settle(records, [ZeroDivisionError()])
