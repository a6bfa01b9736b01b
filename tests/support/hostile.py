"""Hostile records for every event type: hand-written pills and hypothesis strategies.

Everything here is bytes a producer could put on a topic. The pills are the records that once
stopped a consumer (an overflowing timestamp, a newer writer's enum symbol, a version of 200,000
control characters, 2,000 subnormal floats) and the classic malformations (empty, truncated,
wrong magic or fingerprint, trailing bytes, bad UTF-8, a length that promises more than there
is). The strategies write any value the Avro schema types admit with plain fastavro, so the
bytes are wire-valid but may break every rule the contract adds on top of the types.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from hypothesis import strategies as st

from streams.events import EVENT_TYPES, SCHEMA_DIR, Codec, encode, to_json, to_record
from tests.support.avro import encode_with, named_records, schema
from tests.support.sample_events import sample

NEWER_SYMBOL = "FROM_A_NEWER_WRITER"
_IN_150_YEARS = round(datetime(2176, 1, 1, tzinfo=UTC).timestamp() * 1000)


@dataclasses.dataclass(frozen=True, slots=True)
class Pill:
    """One hostile record value for topics carrying ``event_type``."""

    name: str
    event_type: str
    data: bytes

    @property
    def id(self) -> str:
        return f"{self.event_type}-{self.name}"


def _first_string_field(name: str) -> str:
    """The first required string field after the envelope: an id every consumer reads."""
    for field in schema(name)["fields"][3:]:
        if field["type"] == "string":
            return str(field["name"])
    raise LookupError(f"{name} has no required string field")


def _with(name: str, **changes: Any) -> bytes:
    return encode_with(schema(name), to_record(sample(EVENT_TYPES[name])) | changes)


def _bad_utf8(name: str) -> bytes:
    # A marker of the same byte length, swapped for an invalid UTF-8 sequence after encoding.
    marker = "\x7f" * 8
    data = _with(name, **{_first_string_field(name): marker})
    return data.replace(marker.encode(), b"\xff\xfe\xc3\x28\xa0\xa1\xe2\x28", 1)


def _length_bomb(name: str) -> bytes:
    # An id claims 2^62 bytes of text; the body ends right after the claim.
    marker = "LENGTH-BOMB"
    data = _with(name, **{_first_string_field(name): marker})
    at = data.index(varint(len(marker)) + marker.encode())
    return data[:at] + varint(2**62)


def varint(n: int) -> bytes:
    """Avro's zigzag varint encoding of a long."""
    z = (n << 1) ^ (n >> 63)
    out = bytearray()
    while z > 0x7F:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


def newer_writer(name: str) -> dict[str, Any] | None:
    """``name``'s schema as a newer writer would send it: one more symbol in its first enum
    without a default (a reader reads an unknown symbol of an enum with one as the default)."""
    newer = copy.deepcopy(schema(name))
    for record in named_records(newer):
        for field in record["fields"]:
            kind = field["type"]
            if isinstance(kind, dict) and kind.get("type") == "enum" and "default" not in kind:
                kind["symbols"] = [*kind["symbols"], NEWER_SYMBOL]
                return newer
    return None


def _newer_symbol(name: str) -> bytes | None:
    newer = newer_writer(name)
    if newer is None:
        return None
    record = to_record(sample(EVENT_TYPES[name]))
    for field in newer["fields"]:
        kind = field["type"]
        if (
            isinstance(kind, dict)
            and kind.get("type") == "enum"
            and NEWER_SYMBOL in kind["symbols"]
        ):
            record[field["name"]] = NEWER_SYMBOL
            return encode_with(newer, record)
    return None  # the enum sits in a nested record: covered by the generated records


def pills(name: str) -> list[Pill]:
    """The hand-written pills for topics carrying event type ``name``."""
    good = encode(sample(EVENT_TYPES[name]))
    ident = _first_string_field(name)
    found = {
        "empty": b"",
        "header-only": good[:10],
        "short-header": good[:5],
        "wrong-magic": b"\x00\x01" + good[2:],
        "unknown-fingerprint": good[:2] + b"\xff" * 8 + good[10:],
        "truncated-body": good[: len(good) - 3],
        "trailing-bytes": good + b"\x00",
        "json-not-avro": b'{"model_id": ' + b"[" * 10_000 + b"]" * 10_000 + b"}",
        "timestamp-overflow": _with(name, occurred_at=2**62),
        "timestamp-150-years-ahead": _with(name, occurred_at=_IN_150_YEARS),
        "control-chars-200k": _with(name, **{ident: "\x01" * 200_000}),
        "nested-json-id": _with(name, **{ident: "[" * 50_000 + "]" * 50_000}),
        "bad-utf8": _bad_utf8(name),
        "length-bomb": _length_bomb(name),
    }
    newer = _newer_symbol(name)
    if newer is not None:
        found["newer-enum-symbol"] = newer
    found.update(_specific(name))
    return [Pill(pill, name, data) for pill, data in found.items()]


def _specific(name: str) -> dict[str, bytes]:
    tiny = [5e-324 * (i + 1) for i in range(2_000)]
    buckets = {"bounds": [float(i) for i in range(5_000)], "counts": [0] * 5_001}
    if name == "Telemetry":
        return {
            "count-2^62": _with(name, request_count=2**62, error_count=0),
            "negative-count": _with(name, request_count=-5, error_count=-9),
            "nan-latency": _with(name, latency_p95_ms=math.nan),
            "5000-buckets": _with(name, latency_ms=buckets),
        }
    if name == "DriftSketch":
        return {
            "2000-subnormals": _with(name, embedding_mean=tiny, embedding_var=tiny),
            "inf-mean": _with(name, embedding_mean=[math.inf, 0.0]),
        }
    if name == "Feedback":
        return {"outcomes-2^62": _with(name, outcomes={"correct": 2**62})}
    if name == "ModelVersion":
        return {"100k-labels": _with(name, labels={f"k{i}": "v" for i in range(100_000)})}
    if name == "DeviceStatus":
        return {"error-1MB": _with(name, last_error="e" * 1_000_000)}
    return {}


def all_pills() -> list[Pill]:
    return [pill for name in sorted(EVENT_TYPES) for pill in pills(name)]


def hostile_codec() -> Codec:
    """The shipped schemas plus every newer writer the pills use, so their bodies get decoded."""
    current = {name: schema(name) for name in EVENT_TYPES}
    released = [json.loads(p.read_text()) for p in sorted(SCHEMA_DIR.glob("released/*/*.avsc"))]
    newer = [w for name in sorted(EVENT_TYPES) if (w := newer_writer(name)) is not None]
    return Codec(current, [*released, *newer])


# --------------------------------------------------------------------------- strategies


def avro_values(
    avro_type: Any, named: Mapping[str, Any], *, hostile: bool
) -> st.SearchStrategy[Any]:
    """Values fastavro writes for ``avro_type``.

    ``hostile``: anything the type admits (NaN, 2^63-1, control characters, 300-character ids);
    otherwise plausible values, so that some records pass every check and are decoded.
    """
    if isinstance(avro_type, list):
        return st.one_of(*(avro_values(t, named, hostile=hostile) for t in avro_type))
    if isinstance(avro_type, str):
        if avro_type in named:
            return avro_values(named[avro_type], named, hostile=hostile)
        return _primitive(avro_type, hostile)
    kind = avro_type["type"]
    logical = avro_type.get("logicalType")
    if logical == "uuid":
        return st.uuids().map(str) | (st.text(max_size=40) if hostile else st.nothing())
    if logical == "timestamp-millis":
        if hostile:
            return st.integers(-(2**63), 2**63 - 1) | st.integers(0, 2**53)
        return st.integers(_YEAR_2000, _YEAR_2100)
    if kind == "record":
        return st.fixed_dictionaries(
            {f["name"]: avro_values(f["type"], named, hostile=hostile) for f in avro_type["fields"]}
        )
    if kind == "enum":
        return st.sampled_from(avro_type["symbols"])
    size = 4 if hostile else 2
    if kind == "array":
        return st.lists(avro_values(avro_type["items"], named, hostile=hostile), max_size=size)
    if kind == "map":
        return st.dictionaries(
            _primitive("string", hostile),
            avro_values(avro_type["values"], named, hostile=hostile),
            max_size=size,
        )
    return _primitive(kind, hostile)


_YEAR_2000 = 946_684_800_000
_YEAR_2100 = 4_102_444_800_000
_ANY_TEXT = st.text(st.characters(exclude_categories=["Cs"]), max_size=12) | st.text(
    st.characters(exclude_categories=["Cs"]), min_size=120, max_size=300
)
_PLAIN_TEXT = st.text("abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=8)


def _primitive(kind: str, hostile: bool) -> st.SearchStrategy[Any]:
    if kind == "null":
        return st.none()
    if kind == "boolean":
        return st.booleans()
    if kind in ("int", "long"):
        if not hostile:
            return st.integers(0, 100)
        bits = 31 if kind == "int" else 63
        return st.integers(-(2**bits), 2**bits - 1) | st.integers(0, 1_000)
    if kind in ("float", "double"):
        if not hostile:
            return st.floats(0, 1, allow_subnormal=False)
        return st.floats(allow_nan=True, allow_infinity=True, allow_subnormal=True)
    if kind == "string":
        return _ANY_TEXT if hostile else _PLAIN_TEXT
    if kind == "bytes":
        return st.binary(max_size=40 if hostile else 8)
    raise ValueError(f"no strategy for Avro type {kind!r}")


def _named_types(avro_schema: Mapping[str, Any]) -> dict[str, Any]:
    named: dict[str, Any] = {}

    def walk(t: Any) -> None:
        if isinstance(t, list):
            for branch in t:
                walk(branch)
        elif isinstance(t, dict):
            if t.get("type") in ("record", "enum") and "name" in t:
                named.setdefault(t["name"], t)
                named.setdefault(f"slmops.{t['name']}", t)
            for f in t.get("fields", ()):
                walk(f["type"])
            for key in ("items", "values"):
                if key in t:
                    walk(t[key])

    walk(avro_schema)
    return named


def wire_records(name: str) -> st.SearchStrategy[bytes]:
    """Single-object bytes of records the Avro schema of ``name`` admits, hostile or not."""
    avro_schema = schema(name)
    named = _named_types(avro_schema)
    records = st.booleans().flatmap(
        lambda hostile: avro_values(avro_schema, named, hostile=hostile)
    )
    return records.map(lambda record: encode_with(avro_schema, record))


def mutated(name: str) -> st.SearchStrategy[bytes]:
    """The valid sample of ``name`` with bytes flipped, cut or appended."""
    good = encode(sample(EVENT_TYPES[name]))

    @st.composite
    def mutate(draw: st.DrawFn) -> bytes:
        data = bytearray(good)
        for _ in range(draw(st.integers(1, 4))):
            i = draw(st.integers(0, len(data) - 1))
            data[i] = draw(st.integers(0, 255))
        cut = draw(st.integers(0, len(data)))
        return bytes(data[:cut]) + draw(st.binary(max_size=8))

    return mutate()


# --------------------------------------------------------------------------- on a real broker

# What the integration tests produce: one of each kind, and nothing near the broker's 1 MB limit
# (a record the broker refuses would test the producer, not the consumer).
ON_THE_WIRE = (
    "empty",
    "wrong-magic",
    "unknown-fingerprint",
    "truncated-body",
    "timestamp-overflow",
    "timestamp-150-years-ahead",
    "control-chars-200k",
    "bad-utf8",
    "length-bomb",
    "newer-enum-symbol",
    "count-2^62",
    "5000-buckets",
    "2000-subnormals",
    "outcomes-2^62",
)


def wire_pills(name: str) -> list[Pill]:
    """The representative subset of ``name``'s pills that integration tests send."""
    return [p for p in pills(name) if p.name in ON_THE_WIRE]


async def send_pills(
    conn: Any, pills_by_topic: Mapping[str, list[Pill]], *, key: bytes | None = None
) -> None:
    """Produce the pills as raw bytes and wait for every ack.

    Keyed by their id, or all by ``key`` to put them in one partition ahead of a good record.
    """
    from streams.kafka.clients import EventProducer

    async with EventProducer(conn) as producer:
        for topic, batch in pills_by_topic.items():
            for pill in batch:
                await producer.send_raw(topic, pill.data, key=key or pill.id.encode())


async def dead_letters(conn: Any, idle_timeout_s: float = 1.5) -> list[Any]:
    """Every DeadLetter on the connection's dead-letter topic so far."""
    from streams.events import DeadLetter
    from streams.kafka.clients import EventConsumer, Received

    topic = conn.catalog().dead_letter
    async with EventConsumer(conn, [topic], name="dead-letter-check") as consumer:
        return [
            r.event
            async for r in consumer.raw_records(idle_timeout_s=idle_timeout_s)
            if isinstance(r, Received) and isinstance(r.event, DeadLetter)
        ]


def json_values(max_leaves: int = 30) -> st.SearchStrategy[Any]:
    """JSON-ish values: nested lists and objects of any scalars, huge integers included."""
    scalars = (
        st.none()
        | st.booleans()
        | st.integers()
        | st.floats(allow_nan=True, allow_infinity=True)
        | st.text(max_size=20)
    )
    return st.recursive(
        scalars,
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
        max_leaves=max_leaves,
    )


def json_events(name: str) -> st.SearchStrategy[dict[str, Any]]:
    """JSON objects for ``name`` (what ``slmops publish`` reads): its sample with some fields
    replaced by any JSON value, and sometimes an unknown field."""
    base = to_json(sample(EVENT_TYPES[name]))
    fields = sorted(base)

    @st.composite
    def event(draw: st.DrawFn) -> dict[str, Any]:
        obj = dict(base)
        for field in draw(st.lists(st.sampled_from(fields), max_size=3, unique=True)):
            obj[field] = draw(json_values())
        if draw(st.booleans()):
            obj[draw(st.text(max_size=8))] = draw(json_values(5))
        return obj

    return event()


def deeply_nested(depth: int = 50_000) -> list[Any]:
    """A list nested ``depth`` levels: a plain repr or a recursive walk of it overflows."""
    value: list[Any] = []
    for _ in range(depth):
        value = [value]
    return value
