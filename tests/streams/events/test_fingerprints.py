"""Fingerprints as the spec and other libraries compute them, and records other libraries write.

Checked against the libraries themselves: fastavro for the spec's canonical form, Python's
``avro`` 1.12 (from PyPI) for its own. Every event type is encoded by ``avro`` and decoded by
slmops, and the other way round, byte for byte.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import avro.io
import avro.schema
import fastavro
import pytest
from fastavro.schema import to_parsing_canonical_form

from streams.events import EVENT_TYPES, SCHEMA_DIR, Event, default_codec, to_record
from streams.events.codec import MAGIC, Codec, schema_fingerprint
from streams.events.fingerprints import PYTHON_AVRO, SPEC, aliases, canonical_form, fingerprint
from tests.support.sample_events import sample

SCHEMAS = sorted([*SCHEMA_DIR.glob("*.avsc"), *SCHEMA_DIR.glob("released/*/*.avsc")])
IDS = [str(p.relative_to(SCHEMA_DIR)) for p in SCHEMAS]


def _load(path: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(path.read_text())
    return loaded


@pytest.mark.parametrize("path", SCHEMAS, ids=IDS)
def test_the_spec_form_is_fastavros(path):
    schema = _load(path)
    expected = to_parsing_canonical_form(fastavro.parse_schema(schema, named_schemas={}))
    assert canonical_form(schema) == expected
    assert fingerprint(schema) == schema_fingerprint(schema)


@pytest.mark.parametrize("path", SCHEMAS, ids=IDS)
def test_the_python_avro_form_is_the_librarys_own(path):
    schema = _load(path)
    theirs = avro.schema.parse(path.read_text())
    assert canonical_form(schema, variant=PYTHON_AVRO) == theirs.canonical_form
    assert fingerprint(schema, variant=PYTHON_AVRO) == theirs.fingerprint()
    # Every slmops schema has a logical type, so the library's fingerprint is never the spec's.
    assert aliases(schema)[PYTHON_AVRO] == theirs.fingerprint()


def test_an_unknown_variant_is_refused():
    with pytest.raises(ValueError, match="unknown canonical form variant"):
        canonical_form(_load(SCHEMAS[0]), variant="avro 0.1")
    assert SPEC != PYTHON_AVRO


def test_no_alias_is_another_schemas_fingerprint():
    codec = default_codec()
    spec = {schema_fingerprint(_load(p)) for p in SCHEMAS}
    assert codec.aliases
    assert not spec & set(codec.aliases)
    assert all(stands_for in spec for _, stands_for in codec.aliases.values())


def _avro_body(name: str, record: dict[str, Any]) -> bytes:
    schema = avro.schema.parse((SCHEMA_DIR / f"{name}.avsc").read_text())
    buf = io.BytesIO()
    avro.io.DatumWriter(schema).write(record, avro.io.BinaryEncoder(buf))
    return buf.getvalue()


@pytest.mark.parametrize("event_type", list(EVENT_TYPES.values()), ids=list(EVENT_TYPES))
def test_records_python_avro_writes_decode_in_slmops(event_type):
    event = sample(event_type)
    name = event_type.SCHEMA
    schema = avro.schema.parse((SCHEMA_DIR / f"{name}.avsc").read_text())
    # What a Python producer writes: the header with its library's fingerprint, then the body.
    data = MAGIC + schema.fingerprint() + _avro_body(name, to_record(event))
    assert default_codec().decode(data) == event


@pytest.mark.parametrize("event_type", list(EVENT_TYPES.values()), ids=list(EVENT_TYPES))
def test_python_avro_reads_what_slmops_writes(event_type):
    event = sample(event_type)
    name = event_type.SCHEMA
    data = default_codec().encode(event)
    assert data[2:10] == default_codec().fingerprint(event_type)
    schema = avro.schema.parse((SCHEMA_DIR / f"{name}.avsc").read_text())
    read = avro.io.DatumReader(schema).read(avro.io.BinaryDecoder(io.BytesIO(data[10:])))
    assert isinstance(read, dict)
    # Read back and written again by the library, the body is the same bytes.
    assert _avro_body(name, read) == data[10:]


def test_a_codec_without_released_versions_still_takes_the_aliases_of_its_schemas():
    current = {name: _load(SCHEMA_DIR / f"{name}.avsc") for name in EVENT_TYPES}
    codec = Codec(current)
    assert len(codec.aliases) == 2 * len(EVENT_TYPES)  # Python's avro and Go's hamba


@pytest.mark.integration
def test_every_event_python_avro_writes_to_the_broker_is_read_by_slmops(kafka_conn):
    import asyncio

    from streams.kafka.clients import EventConsumer, EventProducer, Received

    catalog = kafka_conn.catalog()
    events = [sample(t) for t in EVENT_TYPES.values()]

    async def roundtrip() -> list[Event]:
        async with EventProducer(kafka_conn) as producer:
            for event in events:
                schema = avro.schema.parse((SCHEMA_DIR / f"{event.SCHEMA}.avsc").read_text())
                body = _avro_body(event.SCHEMA, to_record(event))
                value = MAGIC + schema.fingerprint() + body
                topic = catalog.topic_for(type(event))
                await producer.send_raw(topic, value, key=catalog.key_for(event))
        topics = sorted({catalog.topic_for(type(e)) for e in events})
        async with EventConsumer(kafka_conn, topics, name="conformance") as consumer:
            records = await consumer.snapshot()
        assert all(isinstance(r, Received) for r in records), records
        return [r.event for r in records if isinstance(r, Received)]

    read = asyncio.run(roundtrip())
    assert sorted(read, key=lambda e: e.SCHEMA) == sorted(events, key=lambda e: e.SCHEMA)
