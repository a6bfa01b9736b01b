"""The schema fingerprints Avro libraries compute, the spec's and the ones that depart from it.

Single-object encoding puts the CRC-64-AVRO of a schema's Parsing Canonical Form in each
record's header. The spec strips every attribute but a few from that form, so a logical type
(``{"type": "long", "logicalType": "timestamp-millis"}``) canonicalises to its base type
(``"long"``). Python's ``avro`` 1.12 keeps the object (``{"type": "long"}``), Go's
``hamba/avro`` 2.31 keeps the logical type too and writes the fingerprint big-endian, so the
header each writes for the same schema names another fingerprint; readers that only knew the
spec's would refuse every record they write. The canonical form is written here, once per
variant, from the schema itself: an alias is computed, never typed in. The tests check every
form against fastavro, the ``avro`` library and hamba's own output
(``tests/streams/events/test_fingerprints.py``, ``test_conformance_go.py``).

Pure: schemas in, strings and bytes out.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

PRIMITIVES = frozenset({"null", "boolean", "int", "long", "float", "double", "bytes", "string"})
_KEEP = ("name", "type", "fields", "symbols", "items", "values", "size")
_COMPLEX = frozenset({"record", "error", "enum", "fixed", "array", "map"})

SPEC = "spec"
PYTHON_AVRO = "avro (Python) 1.12 and apache-avro (Rust) 0.22"
"""Keeps a logical type as ``{"type": base}``: both libraries write the same fingerprint."""
GO_HAMBA = "hamba/avro (Go) 2.31"
"""Keeps ``{"type": base, "logicalType": name}`` and writes the fingerprint big-endian."""
_VARIANTS = (SPEC, PYTHON_AVRO, GO_HAMBA)


def _fullname(name: str, namespace: str | None) -> str:
    if "." in name or not namespace:
        return name
    return f"{namespace}.{name}"


def _canonical(schema: Any, namespace: str | None, defined: set[str], variant: str) -> str:
    if isinstance(schema, str):
        if schema in PRIMITIVES:
            return json.dumps(schema)
        return json.dumps(_fullname(schema, namespace))
    if isinstance(schema, list):
        return "[" + ",".join(_canonical(s, namespace, defined, variant) for s in schema) + "]"
    kind = schema["type"]
    if kind in PRIMITIVES:
        logical = schema.get("logicalType")
        if logical is None or variant == SPEC:
            return json.dumps(kind)
        if variant == PYTHON_AVRO:
            return '{"type":' + json.dumps(kind) + "}"
        return '{"type":' + json.dumps(kind) + ',"logicalType":' + json.dumps(logical) + "}"
    if not isinstance(kind, str) or kind not in (
        "record",
        "error",
        "enum",
        "fixed",
        "array",
        "map",
    ):
        return _canonical(kind, namespace, defined, variant)
    parts: list[str] = []
    inner = namespace
    if kind in ("record", "error", "enum", "fixed"):
        name = schema["name"]
        full = _fullname(name, schema.get("namespace", namespace))
        if full in defined:
            return json.dumps(full)
        defined.add(full)
        inner = full.rpartition(".")[0] or None
        parts.append('"name":' + json.dumps(full))
    for key in _KEEP[1:]:
        if key not in schema:
            continue
        value = schema[key]
        if key == "type":
            parts.append('"type":' + json.dumps(value))
        elif key == "fields":
            fields = [
                '{"name":'
                + json.dumps(f["name"])
                + ',"type":'
                + _canonical(f["type"], inner, defined, variant)
                + "}"
                for f in value
            ]
            parts.append('"fields":[' + ",".join(fields) + "]")
        elif key == "symbols":
            parts.append('"symbols":[' + ",".join(json.dumps(s) for s in value) + "]")
        elif key in ("items", "values"):
            parts.append(f'"{key}":' + _canonical(value, inner, defined, variant))
        else:  # size
            parts.append('"size":' + str(int(value)))
    return "{" + ",".join(parts) + "}"


def canonical_form(schema: Mapping[str, Any], *, variant: str = SPEC) -> str:
    """The Parsing Canonical Form of ``schema`` as the spec writes it, or as ``variant`` does."""
    if variant not in _VARIANTS:
        raise ValueError(f"unknown canonical form variant {variant!r}")
    return _canonical(dict(schema), None, set(), variant)


def crc64_avro(data: bytes) -> int:
    """The Rabin fingerprint the Avro spec names CRC-64-AVRO."""
    fp = _CRC64_EMPTY
    for byte in data:
        fp = (fp >> 8) ^ _CRC64_TABLE[(fp ^ byte) & 0xFF]
    return fp


def fingerprint(schema: Mapping[str, Any], *, variant: str = SPEC) -> bytes:
    """The 8 header bytes ``variant`` writes (little-endian, as the spec orders them, except
    hamba's)."""
    crc = crc64_avro(canonical_form(schema, variant=variant).encode("utf-8"))
    return crc.to_bytes(8, "big" if variant == GO_HAMBA else "little")


def aliases(schema: Mapping[str, Any]) -> dict[str, bytes]:
    """The fingerprints of ``schema`` that libraries write where they differ from the spec's."""
    spec = fingerprint(schema)
    found = {v: fingerprint(schema, variant=v) for v in (PYTHON_AVRO, GO_HAMBA)}
    return {lib: fp for lib, fp in found.items() if fp != spec}


_CRC64_EMPTY = 0xC15D213AA4D7A795


def _crc64_table() -> list[int]:
    table = []
    for i in range(256):
        fp = i
        for _ in range(8):
            fp = (fp >> 1) ^ (_CRC64_EMPTY & -(fp & 1))
        table.append(fp)
    return table


_CRC64_TABLE = _crc64_table()
