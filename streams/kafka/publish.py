"""Reading events as JSON from other systems: the ``slmops publish`` input format.

Pure: parses, validates, derives event ids and checks record sizes; the caller decides what to
send. A record is either valid as a whole (encoded, keyed, measured) or refused with its line
number, the field at fault and the reason; nothing partial is ever produced.

Event ids. A record without ``event_id`` gets one derived from what the line says, so that
publishing the same input again yields the same ids and consumers that drop duplicates by
``event_id`` drop the repeats::

    event_id = uuid5(EVENT_ID_NAMESPACE, "<topic>/<EventType>/<sha256 hex>/<n>")

where the sha256 is that of the record's canonical JSON (keys sorted, no spaces, UTF-8, as
written in the input, before ``producer`` or ``occurred_at`` are filled in) and ``n`` counts
the identical records before it in the same input (0 for the first), so two identical lines
stay two events.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

from aiokafka.record.default_records import DefaultRecordBatchBuilder

from streams.events import Codec, Event, default_codec, from_json
from streams.events.errors import EventError
from streams.events.topics import Catalog

# Fixed forever: a new namespace would give every re-run new ids.
EVENT_ID_NAMESPACE = uuid.UUID("5b0f6c1e-9a57-4c1b-8d5e-2f1e7c3a9b40")

# What a single record may weigh on the wire. The producer refuses anything over its
# max_request_size (aiokafka's default, which EventProducer keeps); the broker refuses a batch
# over the topic's max.message.bytes (Kafka's default below, unless the topic sets its own).
PRODUCER_MAX_REQUEST_BYTES = 1_048_576
KAFKA_MAX_MESSAGE_BYTES = 1_048_588


@dataclasses.dataclass(frozen=True, slots=True)
class Parsed:
    """One input record: its encoded event, or why it was refused."""

    line: int
    event: Event | None = None
    value: bytes | None = None
    key: bytes | None = None
    size: int = 0
    error: str | None = None
    field: str | None = None
    # Whether the input named the record's time; a filled-in "now" differs on every run.
    timed: bool = True

    @property
    def ok(self) -> bool:
        return self.event is not None


def record_size(key: bytes | None, value: bytes | None) -> int:
    """The bytes the producer counts for one record against its maximum request size."""
    size: int = DefaultRecordBatchBuilder.estimate_size_in_bytes(key, value, [])
    return size


def canonical_json(obj: Any) -> str:
    """One spelling per JSON value, so that the same record always hashes the same."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def derive_event_id(topic: str, event_type: str, canonical: str, occurrence: int) -> str:
    """The event id of the ``occurrence``-th record with this canonical JSON (see module doc)."""
    digest = hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()
    return str(uuid.uuid5(EVENT_ID_NAMESPACE, f"{topic}/{event_type}/{digest}/{occurrence}"))


def _objects(text: str) -> Iterator[tuple[int, Any | None, str | None]]:
    """Yield (line, object, error): one JSON value, a JSON array, or JSON lines."""
    stripped = text.strip()
    if not stripped:
        return
    try:
        whole = json.loads(stripped)
    except (json.JSONDecodeError, RecursionError):
        whole = None
    else:
        first_line = text[: text.index(stripped[0])].count("\n") + 1
        if isinstance(whole, list):
            for i, item in enumerate(whole, start=1):
                yield i, item, None
        else:
            yield first_line, whole, None
        return
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            yield number, json.loads(line), None
        except json.JSONDecodeError as exc:
            yield number, None, f"invalid JSON: {exc.msg} (column {exc.colno})"
        except RecursionError:
            yield number, None, "invalid JSON: nested too deeply"


def parse_events(
    text: str,
    event_type: type[Event],
    *,
    producer: str,
    catalog: Catalog | None = None,
    codec: Codec | None = None,
    max_record_bytes: int = PRODUCER_MAX_REQUEST_BYTES,
) -> Iterator[Parsed]:
    """Validate, encode and measure every record of ``text``.

    Envelope fields are filled when absent: ``producer``, ``occurred_at`` (now) and an
    ``event_id`` derived from the record (module doc). A record is valid when it builds,
    encodes and decodes again as a consumer would; one whose encoded size with its key
    exceeds ``max_record_bytes`` is refused like an invalid one.
    """
    codec = codec or default_codec()
    catalog = catalog or Catalog()
    topic = catalog.topic_for(event_type)
    seen: Counter[str] = Counter()
    for line, obj, error in _objects(text):
        if error is not None:
            yield Parsed(line, error=error)
            continue
        if not isinstance(obj, dict):
            yield Parsed(line, error=f"expected a JSON object, got {type(obj).__name__}")
            continue
        timed = "occurred_at" in obj
        if "event_id" not in obj:
            canonical = canonical_json(obj)
            obj["event_id"] = derive_event_id(topic, event_type.SCHEMA, canonical, seen[canonical])
            seen[canonical] += 1
        obj.setdefault("producer", producer)
        try:
            event = from_json(event_type, obj)
            value = codec.encode(event)
            # What consumers will do with the bytes: any check the contract runs only when
            # decoding (ranges, lengths) refuses the record here, before it is sent.
            codec.decode(value, event_type)
        except EventError as exc:
            yield Parsed(line, error=exc.reason, field=exc.field)
            continue
        key = catalog.key_for(event)
        size = record_size(key, value)
        if size > max_record_bytes:
            yield Parsed(
                line,
                size=size,
                error=f"encoded record is {size:,} bytes; at most {max_record_bytes:,} fit "
                f"in one Kafka message on {topic}",
            )
            continue
        yield Parsed(line, event=event, value=value, key=key, size=size, timed=timed)


def refuse_oversized(parsed: list[Parsed], max_record_bytes: int, topic: str) -> list[Parsed]:
    """``parsed`` again, with valid records over a lower limit (the topic's) now refused."""
    out = []
    for p in parsed:
        if p.ok and p.size > max_record_bytes:
            p = Parsed(
                p.line,
                size=p.size,
                error=f"encoded record is {p.size:,} bytes; at most {max_record_bytes:,} fit "
                f"in one Kafka message on {topic}",
            )
        out.append(p)
    return out
