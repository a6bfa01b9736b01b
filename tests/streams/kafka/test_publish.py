from __future__ import annotations

import json

from streams.events import Feedback, decode
from streams.kafka.publish import parse_events


def test_json_lines_keep_line_numbers_and_reject_bad_records_whole():
    text = "\n".join(
        [
            json.dumps({"model_id": "m", "outcomes": {"correct": 3}}),
            "",
            "{not json",
            json.dumps({"model_id": "m", "score": 1.5}),
            json.dumps({"model_id": "m", "score": 0.5, "producer": "crm"}),
        ]
    )
    parsed = list(parse_events(text, Feedback, producer="cli"))
    assert [p.line for p in parsed] == [1, 3, 4, 5]
    assert parsed[0].error is None
    assert parsed[3].error is None
    assert "invalid JSON" in (parsed[1].error or "")
    assert "score: must be <= 1.0" in (parsed[2].error or "")
    assert parsed[2].value is None
    assert parsed[2].event is None
    first = decode(parsed[0].value or b"")
    assert isinstance(first, Feedback)
    assert first.producer == "cli"
    assert decode(parsed[3].value or b"").producer == "crm"


def test_one_pretty_printed_object_is_one_record():
    text = json.dumps({"model_id": "m", "outcomes": {"correct": 1}}, indent=2)
    parsed = list(parse_events(text, Feedback, producer="cli"))
    assert len(parsed) == 1
    assert parsed[0].error is None


def test_json_array_gives_item_numbers():
    text = json.dumps([{"model_id": "m"}, {"model_id": ""}, 5])
    parsed = list(parse_events(text, Feedback, producer="cli"))
    assert [p.line for p in parsed] == [1, 2, 3]
    assert parsed[0].error is None
    assert "model_id" in (parsed[1].error or "")
    assert "expected a JSON object" in (parsed[2].error or "")


def test_missing_required_field_is_named():
    parsed = list(parse_events('{"outcomes": {}}', Feedback, producer="cli"))
    assert "model_id is required" in (parsed[0].error or "")


def test_event_ids_are_filled_and_distinct():
    text = "\n".join(json.dumps({"model_id": "m"}) for _ in range(3))
    ids = {p.event.event_id for p in parse_events(text, Feedback, producer="cli") if p.event}
    assert len(ids) == 3
