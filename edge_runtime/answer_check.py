"""What a device can tell about an answer without a label: empty, out of format, a refusal.

A manifest may declare its model's output format (``output_format: json`` and optionally a
JSON schema, ``output_schema``). Each finished generation is checked here and only the verdicts
(booleans) reach telemetry, never the text. The schema support is the subset a command or
extraction task needs, checked without a JSON-schema library on the device: ``type``,
``enum``, ``const``, ``required``, ``properties``, ``additionalProperties`` (boolean),
``items``, ``minLength``/``maxLength``; unknown keywords are ignored, as JSON Schema says.
Pure.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from typing import Any

REFUSAL_OPENINGS: tuple[str, ...] = (
    "i'm sorry",
    "i am sorry",
    "sorry, i",
    "i cannot",
    "i can't",
    "i can not",
    "i'm unable",
    "i am unable",
    "i apologize",
    "as an ai",
    "as a language model",
)
"""How refusals open, lower-cased (straight or curly apostrophes)."""

_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,),
    "array": (list,),
    "string": (str,),
    "boolean": (bool,),
    "null": (type(None),),
}


@dataclasses.dataclass(frozen=True, slots=True)
class AnswerCheck:
    empty: bool = False
    checked: bool = False
    violation: str | None = None
    refusal: bool = False


def check_answer(
    text: str, output_format: str = "text", schema: Mapping[str, Any] | None = None
) -> AnswerCheck:
    """The label-free verdicts on one answer (``violation`` says why it is out of format)."""
    stripped = text.strip()
    opening = stripped[:40].lower().replace("\u2019", "'")
    refusal = any(opening.startswith(r) for r in REFUSAL_OPENINGS)
    if output_format != "json":
        return AnswerCheck(empty=not stripped, refusal=refusal)
    violation: str | None
    if not stripped:
        violation = "empty answer"
    else:
        try:
            value = json.loads(stripped)
        except ValueError:
            violation = "not JSON"
        else:
            violation = schema_violation(value, schema) if schema else None
    return AnswerCheck(empty=not stripped, checked=True, violation=violation, refusal=refusal)


def schema_violation(value: Any, schema: Mapping[str, Any], where: str = "$") -> str | None:
    """Why ``value`` is not what ``schema`` allows (the subset above), or None."""
    kind = schema.get("type")
    if isinstance(kind, str) and not _is_type(value, kind):
        return f"{where}: not {kind}"
    if "const" in schema and value != schema["const"]:
        return f"{where}: not {schema['const']!r}"
    enum = schema.get("enum")
    if isinstance(enum, list) and value not in enum:
        return f"{where}: not one of the allowed values"
    if isinstance(value, str):
        low, high = schema.get("minLength"), schema.get("maxLength")
        if isinstance(low, int) and len(value) < low:
            return f"{where}: shorter than {low}"
        if isinstance(high, int) and len(value) > high:
            return f"{where}: longer than {high}"
    if isinstance(value, dict):
        return _object_violation(value, schema, where)
    items = schema.get("items")
    if isinstance(value, list) and isinstance(items, Mapping):
        for n, item in enumerate(value):
            found = schema_violation(item, items, f"{where}[{n}]")
            if found:
                return found
    return None


def _object_violation(value: dict[str, Any], schema: Mapping[str, Any], where: str) -> str | None:
    for key in schema.get("required", ()):
        if key not in value:
            return f"{where}: lacks {key!r}"
    properties = schema.get("properties", {})
    if not isinstance(properties, Mapping):
        return None
    for key, item in value.items():
        sub = properties.get(key)
        if sub is None:
            if schema.get("additionalProperties") is False:
                return f"{where}: unexpected {key!r}"
            continue
        if isinstance(sub, Mapping):
            found = schema_violation(item, sub, f"{where}.{key}")
            if found:
                return found
    return None


def _is_type(value: Any, kind: str) -> bool:
    if kind == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    types = _TYPES.get(kind)
    if types is None:
        return True  # an unknown type keyword constrains nothing
    return isinstance(value, types) and (kind == "boolean" or not isinstance(value, bool))
