"""The ``.avsc`` files as plain dicts, and bytes written by plain fastavro.

Bytes built here bypass the records' own validation, so a test can put on the wire what the
schema admits but the contract refuses, as a producer in another language could.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator, Mapping
from typing import Any

import fastavro

from streams.events import MAGIC, SCHEMA_DIR, schema_fingerprint


def schema(name: str) -> dict[str, Any]:
    """The current schema of event type ``name``, freshly parsed (callers may change it)."""
    parsed: dict[str, Any] = json.loads((SCHEMA_DIR / f"{name}.avsc").read_text())
    return parsed


def encode_with(writer: Mapping[str, Any], record: Mapping[str, Any]) -> bytes:
    """``record`` in single-object encoding under schema ``writer``: magic, fingerprint, body."""
    buf = io.BytesIO()
    buf.write(MAGIC + schema_fingerprint(writer))
    fastavro.schemaless_writer(buf, fastavro.parse_schema(dict(writer), named_schemas={}), record)
    return buf.getvalue()


def named_records(avro_type: Any) -> Iterator[dict[str, Any]]:
    """Every record definition inside an Avro type, the type itself first when it is one."""
    if isinstance(avro_type, list):
        for branch in avro_type:
            yield from named_records(branch)
    elif isinstance(avro_type, dict):
        kind = avro_type.get("type")
        if kind == "record":
            yield avro_type
            for field in avro_type["fields"]:
                yield from named_records(field["type"])
        elif kind == "array":
            yield from named_records(avro_type["items"])
        elif kind == "map":
            yield from named_records(avro_type["values"])
