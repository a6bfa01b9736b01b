"""``slmops validate``: the contract's refusals and the control worker's, with their reasons,
line by line; nothing is sent and no broker is asked."""

from __future__ import annotations

import json

from slmops.cli import main
from streams.events import Telemetry, to_json
from tests.support.control_inputs import telemetry


def _lines(path, records) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return str(path)


def test_a_record_the_control_worker_would_refuse_is_refused_with_its_reason(tmp_path, capsys):
    good = to_json(telemetry("d1", start_ms=1_767_225_600_000))
    odd = json.loads(json.dumps(good))
    # Valid Avro and within every limit, but not on the fleet's shared latency bounds.
    odd["latency_ms"] = {"bounds": [1.0, 5.0, 10.0], "counts": [3, 4, 2, 1]}
    odd["event_id"] = "00000000-0000-4000-8000-0000000000b2"
    negative = json.loads(json.dumps(good))
    negative["request_count"] = -1
    negative["event_id"] = "00000000-0000-4000-8000-0000000000b3"
    file = _lines(tmp_path / "t.jsonl", [good, odd, negative])
    assert main(["validate", "telemetry", file]) == 3
    err = capsys.readouterr().err
    assert "line 2: refused: latency_ms: latency histogram does not use the shared bounds" in err
    assert "line 3: refused: request_count:" in err
    assert f"1 of 3 Telemetry record(s) from {file} valid, 2 refused" in err


def test_valid_records_exit_zero_and_an_event_type_name_works_too(tmp_path, capsys):
    record = to_json(telemetry("d1", start_ms=1_767_225_600_000))
    file = _lines(tmp_path / "t.jsonl", [record])
    assert main(["validate", Telemetry.SCHEMA, file]) == 0
    assert main(["validate", "slmops.telemetry", file]) == 0
    assert "1 of 1 Telemetry record(s)" in capsys.readouterr().err


def test_an_unknown_topic_is_one_error_line(tmp_path, capsys):
    file = _lines(tmp_path / "t.jsonl", [{}])
    assert main(["validate", "nothing", file]) == 1
    assert "slmops: error:" in capsys.readouterr().err


def test_the_rules_beside_the_schemas_are_what_the_code_enforces(capsys):
    from slmops.contract import RULES_FILE, rules, rules_json
    from streams.control.aggregate import SHARED_BOUNDS
    from streams.events import SCHEMA_DIR
    from streams.events.limits import LIMITS

    # Regenerate with `slmops schemas --rules > streams/events/schemas/rules.json`.
    assert (SCHEMA_DIR / RULES_FILE).read_text() == rules_json()
    assert main(["schemas", "--rules"]) == 0
    assert json.loads(capsys.readouterr().out) == rules()
    published = rules()
    assert set(published["limits"]) == set(LIMITS)
    assert published["limits"]["Telemetry"]["device_id"]["chars"] == 128
    bounds = published["shared_histogram_bounds"]["Telemetry"]
    assert bounds == {k: list(v) for k, v in SHARED_BOUNDS.items()}
    assert "generation.ttft_ms" in bounds
