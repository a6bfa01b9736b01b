from __future__ import annotations

import hashlib
import inspect
import json
import uuid

from aiokafka import AIOKafkaProducer

from streams.events import Codec, Feedback, decode
from streams.events.errors import EventError
from streams.events.topics import Catalog
from streams.kafka.publish import (
    EVENT_ID_NAMESPACE,
    PRODUCER_MAX_REQUEST_BYTES,
    parse_events,
    record_size,
    refuse_oversized,
)


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
    assert parsed[2].field == "score"
    assert "must be <= 1.0" in (parsed[2].error or "")
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
    assert parsed[1].field == "model_id"
    assert "expected a JSON object" in (parsed[2].error or "")


def test_missing_required_field_is_named():
    parsed = list(parse_events('{"outcomes": {}}', Feedback, producer="cli"))
    assert "model_id is required" in (parsed[0].error or "")


def test_event_ids_are_filled_and_distinct():
    text = "\n".join(json.dumps({"model_id": "m"}) for _ in range(3))
    ids = {p.event.event_id for p in parse_events(text, Feedback, producer="cli") if p.event}
    assert len(ids) == 3


def _ids(text: str, **kwargs) -> list[str]:
    return [p.event.event_id for p in parse_events(text, Feedback, **kwargs) if p.event]


LINES = "\n".join(json.dumps({"model_id": "m", "outcomes": {"correct": i % 3}}) for i in range(6))


def test_the_same_input_gives_the_same_event_ids_every_time():
    first = _ids(LINES, producer="cli")
    assert len(first) == 6
    assert _ids(LINES, producer="cli") == first


def test_identical_lines_stay_distinct_events():
    # Records 0 and 3 are identical, as are 1 and 4, 2 and 5: each pair is two observations.
    ids = _ids(LINES, producer="cli")
    assert len(set(ids)) == 6


def test_an_id_depends_on_the_record_not_on_its_place_or_the_producer_flag():
    ids = _ids(LINES, producer="cli")
    other_line = json.dumps({"model_id": "other"})
    shifted = _ids(other_line + "\n" + LINES, producer="another-producer")
    assert shifted[1:] == ids
    # Key order and spacing do not matter: the canonical JSON is hashed.
    respelled = '{ "outcomes": {"correct": 0},   "model_id": "m" }'
    assert _ids(respelled, producer="cli") == ids[:1]


def test_ids_differ_between_topics():
    ids = _ids(LINES, producer="cli")
    assert set(_ids(LINES, producer="cli", catalog=Catalog("staging"))).isdisjoint(ids)


def test_ids_follow_the_documented_rule():
    (p,) = parse_events('{"model_id": "m"}', Feedback, producer="cli")
    digest = hashlib.sha256(b'{"model_id":"m"}').hexdigest()
    expected = uuid.uuid5(EVENT_ID_NAMESPACE, f"slmops.feedback/Feedback/{digest}/0")
    assert p.event is not None
    assert p.event.event_id == str(expected)


def test_a_given_event_id_is_kept():
    given = "0b8f3f0e-2a44-4bde-9c1e-6d0c3c3b2a10"
    (p,) = parse_events(json.dumps({"model_id": "m", "event_id": given}), Feedback, producer="c")
    assert p.event is not None
    assert p.event.event_id == given


def test_a_record_over_the_size_limit_is_refused_with_its_size():
    big = {"model_id": "m", "examples": [{"text": "x" * 5000, "label": "a", "consent": True}]}
    text = "\n".join([json.dumps({"model_id": "m"}), json.dumps(big)])
    small, large = parse_events(text, Feedback, producer="cli", max_record_bytes=4096)
    assert small.ok
    assert not large.ok
    assert large.line == 2
    assert large.size > 5000
    assert f"{large.size:,} bytes; at most 4,096" in (large.error or "")


def test_the_limit_is_inclusive_and_a_lower_one_refuses_more():
    (p,) = parse_events('{"model_id": "m"}', Feedback, producer="cli")
    assert p.size == record_size(p.key, p.value)
    (at_limit,) = parse_events('{"model_id": "m"}', Feedback, producer="c", max_record_bytes=p.size)
    assert at_limit.ok
    (refused,) = refuse_oversized([p], p.size - 1, "slmops.feedback")
    assert not refused.ok
    assert refused.line == p.line


def test_the_producer_limit_is_the_clients_default():
    default = inspect.signature(AIOKafkaProducer).parameters["max_request_size"].default
    assert default == PRODUCER_MAX_REQUEST_BYTES


def test_a_refusal_names_the_field():
    (p,) = parse_events('{"model_id": "m", "score": 3}', Feedback, producer="cli")
    assert p.field == "score"
    assert (p.error or "").startswith("must be <= 1.0")


def test_a_record_knows_whether_the_input_named_its_time():
    text = "\n".join(
        [json.dumps({"model_id": "m"}), json.dumps({"model_id": "m", "occurred_at": 1_000})]
    )
    untimed, timed = parse_events(text, Feedback, producer="cli")
    assert not untimed.timed
    assert timed.timed


def test_deeply_nested_json_is_refused_not_raised():
    text = "[" * 100_000 + "]" * 100_000
    parsed = list(parse_events(text + "\n" + '{"model_id": "m"}', Feedback, producer="cli"))
    assert [p.ok for p in parsed] == [False, True]
    assert "nested too deeply" in (parsed[0].error or "")


class _StricterOnDecode(Codec):
    """A contract whose decode refuses more than building a record does."""

    def decode(self, data, expected=None):
        event = super().decode(data, expected)
        if getattr(event, "model_id", "") == "too-long":
            raise EventError("longer than the contract allows", field="model_id")
        return event


def test_what_decoding_refuses_is_refused_before_sending():
    text = "\n".join([json.dumps({"model_id": "ok"}), json.dumps({"model_id": "too-long"})])
    codec = _StricterOnDecode.from_directory()
    ok, refused = parse_events(text, Feedback, producer="cli", codec=codec)
    assert ok.ok
    assert not refused.ok
    assert refused.field == "model_id"
    assert refused.error == "longer than the contract allows"
