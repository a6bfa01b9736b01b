"""Avro single-object encoding of events, with the writer schema looked up by fingerprint."""

from __future__ import annotations

import dataclasses
import functools
import io
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import fastavro
from fastavro.schema import to_parsing_canonical_form

from streams.events.convert import from_record, to_record
from streams.events.errors import EventError
from streams.events.fingerprints import aliases, crc64_avro
from streams.events.records import EVENT_TYPES, E, Event

SCHEMA_DIR = Path(__file__).parent / "schemas"
MAGIC = b"\xc3\x01"
_HEADER_LEN = len(MAGIC) + 8


def schema_fingerprint(schema: Mapping[str, Any]) -> bytes:
    """The 8 little-endian fingerprint bytes that single-object encoding puts on the wire."""
    canonical = to_parsing_canonical_form(fastavro.parse_schema(dict(schema), named_schemas={}))
    return crc64_avro(canonical.encode("utf-8")).to_bytes(8, "little")


# --------------------------------------------------------------------------- codec


@dataclasses.dataclass(frozen=True, slots=True)
class _Writer:
    name: str
    parsed: Any
    schema: Mapping[str, Any]


class Codec:
    """Encodes typed events to single-object Avro and back.

    It knows the current schema of every event type (the reader) and every released version
    (possible writers), keyed by fingerprint.
    """

    def __init__(
        self,
        current: Mapping[str, Mapping[str, Any]],
        released: Iterable[Mapping[str, Any]] = (),
    ) -> None:
        self._readers: dict[str, Any] = {}
        self._fingerprints: dict[str, bytes] = {}
        self._writers: dict[bytes, _Writer] = {}
        for name, schema in current.items():
            parsed = fastavro.parse_schema(dict(schema), named_schemas={})
            self._readers[name] = parsed
            fp = schema_fingerprint(schema)
            self._fingerprints[name] = fp
            self._writers[fp] = _Writer(name, parsed, schema)
        for schema in released:
            name = str(schema["name"])
            if name not in self._readers:
                raise EventError(f"released schema {name!r} has no current version")
            self._writers.setdefault(
                schema_fingerprint(schema),
                _Writer(name, fastavro.parse_schema(dict(schema), named_schemas={}), schema),
            )
        # The fingerprints other libraries write for the same schemas (streams.events.fingerprints).
        self.aliases: dict[bytes, tuple[str, bytes]] = {}
        """Alias fingerprint -> (library, the spec's fingerprint it stands for)."""
        for spec_fp, writer in list(self._writers.items()):
            for library, alias in aliases(writer.schema).items():
                taken = self._writers.get(alias)
                if taken is not None and taken is not writer:
                    raise EventError(
                        f"{library}'s fingerprint of {writer.name} is another schema's",
                        event_type=writer.name,
                    )
                self._writers[alias] = writer
                self.aliases[alias] = (library, spec_fp)

    @classmethod
    def from_directory(cls, directory: Path = SCHEMA_DIR) -> Codec:
        current = {p.stem: json.loads(p.read_text()) for p in sorted(directory.glob("*.avsc"))}
        released = [json.loads(p.read_text()) for p in sorted(directory.glob("released/*/*.avsc"))]
        return cls(current, released)

    def knows(self, fingerprint: bytes) -> bool:
        """Whether records whose header names ``fingerprint`` decode (a writer or an alias)."""
        return fingerprint in self._writers

    def fingerprint(self, event_type: type[Event] | str) -> bytes:
        name = event_type if isinstance(event_type, str) else event_type.SCHEMA
        return self._fingerprints[name]

    def schemas(self, name: str) -> tuple[Mapping[str, Any], dict[bytes, Mapping[str, Any]]]:
        """The current schema of event type ``name`` and every schema it reads, by fingerprint."""
        writers = {fp: w.schema for fp, w in self._writers.items() if w.name == name}
        return self._writers[self._fingerprints[name]].schema, writers

    def encode(self, event: Event) -> bytes:
        name = event.SCHEMA
        if name not in self._readers:
            raise EventError("no schema for this event type", event_type=name)
        buf = io.BytesIO()
        buf.write(MAGIC)
        buf.write(self._fingerprints[name])
        try:
            fastavro.schemaless_writer(buf, self._readers[name], to_record(event))
        except (TypeError, ValueError, KeyError, AttributeError) as exc:
            raise EventError(f"does not fit its schema: {exc}", event_type=name) from exc
        return buf.getvalue()

    def decode(self, data: bytes, expected: type[E] | None = None) -> Event:
        """Decode bytes; with ``expected`` also check the event type."""
        if not isinstance(data, bytes | bytearray | memoryview):
            raise EventError(f"expected bytes, got {type(data).__name__}")
        data = bytes(data)
        if len(data) < _HEADER_LEN:
            raise EventError(f"truncated: {len(data)} bytes is shorter than the 10-byte header")
        if data[:2] != MAGIC:
            raise EventError(f"wrong magic {data[:2].hex()}: not Avro single-object encoding")
        writer = self._writers.get(data[2:_HEADER_LEN])
        if writer is None:
            raise EventError(f"unknown schema fingerprint {data[2:_HEADER_LEN].hex()}")
        if expected is not None and writer.name != expected.SCHEMA:
            raise EventError(f"expected {expected.SCHEMA}, got {writer.name}")
        body = io.BytesIO(data[_HEADER_LEN:])
        # The contract's boundary: whatever arrives, a consumer sees only EventError. fastavro
        # raises many types on hostile bodies (OverflowError for a timestamp past year 9999,
        # SchemaResolutionError for a symbol a newer writer added, RecursionError, ...).
        try:
            record = fastavro.schemaless_reader(body, writer.parsed, self._readers[writer.name])
        except Exception as exc:
            raise EventError(f"corrupt or truncated body: {exc!r}", event_type=writer.name) from exc
        if body.tell() != len(data) - _HEADER_LEN:
            raise EventError("trailing bytes after the record", event_type=writer.name)
        if not isinstance(record, dict):
            raise EventError("body is not a record", event_type=writer.name)
        try:
            return from_record(EVENT_TYPES[writer.name], record)
        except EventError:
            raise
        except Exception as exc:
            raise EventError(f"invalid values: {exc!r}", event_type=writer.name) from exc


@functools.cache
def default_codec() -> Codec:
    """The codec for the schemas shipped with this package."""
    return Codec.from_directory()


def encode(event: Event) -> bytes:
    return default_codec().encode(event)


def decode(data: bytes, expected: type[E] | None = None) -> Event:
    return default_codec().decode(data, expected)
