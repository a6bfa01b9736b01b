"""Typed records to and from plain values: Avro records for the codec, JSON for people and tools."""

from __future__ import annotations

import base64
import dataclasses
import enum
import reprlib
import types
import typing
import uuid
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from streams.events.errors import EventError
from streams.events.records import E, Event


def _to_plain(value: Any, *, json_mode: bool) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            f.name: _to_plain(getattr(value, f.name), json_mode=json_mode)
            for f in dataclasses.fields(value)
        }
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, tuple | list):
        return [_to_plain(v, json_mode=json_mode) for v in value]
    if isinstance(value, Mapping):
        return {k: _to_plain(v, json_mode=json_mode) for k, v in value.items()}
    if json_mode and isinstance(value, datetime):
        return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    if json_mode and isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    return value


_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxstring, _REPR.maxother = 2, 60, 60


def _short(value: Any) -> str:
    """A short repr of ``value``, however large or deeply nested (error messages end up in logs
    and dead letters; a plain repr of a deep value would raise RecursionError)."""
    return _REPR.repr(value)


def _parse_datetime(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, int) and not isinstance(value, bool):
        try:
            return datetime.fromtimestamp(value / 1000, tz=UTC)
        except (OverflowError, OSError) as exc:  # beyond the platform's time_t or float range
            raise ValueError(f"epoch milliseconds {_short(value)} out of range") from exc
    if isinstance(value, str):
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    raise TypeError(f"expected an ISO 8601 string or epoch milliseconds, got {_short(value)}")


Converter = Callable[[Any, str], Any]
_CONVERTERS: dict[tuple[Any, bool], Converter] = {}


def _converter(tp: Any, json_mode: bool) -> Converter:
    """A function turning a plain value (Avro dict or JSON) into ``tp``, built once per type.

    Resolving type hints per value would cost more than the Avro decoding itself; the control
    plane decodes thousands of events a second.
    """
    key = (tp, json_mode)
    found = _CONVERTERS.get(key)
    if found is None:
        found = _CONVERTERS[key] = _make_converter(tp, json_mode)
    return found


def _make_converter(tp: Any, json_mode: bool) -> Converter:
    origin = typing.get_origin(tp)
    if origin in (types.UnionType, typing.Union):
        inner = _converter(next(a for a in typing.get_args(tp) if a is not type(None)), json_mode)

        def optional(value: Any, path: str) -> Any:
            return None if value is None else inner(value, path)

        return optional
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        return _record_converter(tp, json_mode)
    if origin is tuple:
        item = _converter(typing.get_args(tp)[0], json_mode)
        # Leaves that return a value of exactly their type as it is: a list of only those
        # (an embedding of thousands of floats) is taken whole, checked in C.
        same = _EXACT.get(item)

        def sequence(value: Any, path: str) -> Any:
            if value is None:
                raise TypeError(f"{path} is required")
            if isinstance(value, str | bytes) or not isinstance(value, Iterable):
                raise TypeError(f"{path} must be a list")
            if (
                same is not None
                and isinstance(value, list | tuple)
                and value
                and type(value[0]) is same
                and len(set(map(type, value))) == 1
            ):
                return tuple(value)
            return tuple(item(v, f"{path}[{i}]") for i, v in enumerate(value))

        return sequence
    if origin in (Mapping, dict) or tp is Mapping:
        val = _converter(typing.get_args(tp)[1], json_mode)

        def mapping(value: Any, path: str) -> Any:
            if not isinstance(value, Mapping):
                raise TypeError(f"{path} must be an object")
            return {str(k): val(v, f"{path}[{k}]") for k, v in value.items()}

        return mapping
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        enum_type = tp

        def enumeration(value: Any, path: str) -> Any:
            try:
                if not isinstance(value, str):
                    raise ValueError
                return enum_type(value)
            except ValueError:
                allowed = ", ".join(m.value for m in enum_type)
                raise ValueError(f"{path} must be one of {allowed}, got {_short(value)}") from None

        return enumeration
    leaf = _LEAVES.get(tp)
    if leaf is None:
        raise TypeError(f"unsupported type {tp!r}")  # a schema/dataclass mismatch
    if tp is bytes and json_mode:
        return _json_bytes
    return leaf


def _required(path: str) -> typing.NoReturn:
    raise TypeError(f"{path} is required")


def _float(value: Any, path: str) -> float:
    if type(value) is float:
        return value
    if value is None:
        _required(path)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{path} must be a number, got {_short(value)}")
    try:
        return float(value)
    except OverflowError:
        raise ValueError(f"{path} is too large for a double") from None


def _int(value: Any, path: str) -> int:
    if type(value) is int:
        return value
    if value is None:
        _required(path)
    raise TypeError(f"{path} must be an integer, got {_short(value)}")


def _bool(value: Any, path: str) -> bool:
    if isinstance(value, bool):
        return value
    if value is None:
        _required(path)
    raise TypeError(f"{path} must be true or false, got {_short(value)}")


def _str(value: Any, path: str) -> str:
    if type(value) is str:
        return value
    if isinstance(value, uuid.UUID):  # fastavro decodes the uuid logical type
        return str(value)
    if value is None:
        _required(path)
    raise TypeError(f"{path} must be a string, got {_short(value)}")


def _bytes(value: Any, path: str) -> bytes:
    if isinstance(value, bytes):
        return value
    if value is None:
        _required(path)
    raise TypeError(f"{path} must be bytes")


def _json_bytes(value: Any, path: str) -> bytes:
    if isinstance(value, str):
        return base64.b64decode(value, validate=True)
    return _bytes(value, path)


def _datetime(value: Any, path: str) -> datetime:
    if value is None:
        _required(path)
    return _parse_datetime(value)


# Leaves that return a value of exactly this type unchanged.
_EXACT: dict[Converter, type] = {_float: float, _int: int, _str: str}
_LEAVES: dict[Any, Converter] = {
    float: _float,
    int: _int,
    bool: _bool,
    str: _str,
    bytes: _bytes,
    datetime: _datetime,
}


def _record_converter(cls: type[Any], json_mode: bool) -> Converter:
    hints = typing.get_type_hints(cls)
    fields = dataclasses.fields(cls)
    names = frozenset(f.name for f in fields)
    plan = [
        (
            f.name,
            _converter(hints[f.name], json_mode),
            f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING,
        )
        for f in fields
    ]

    def record(value: Any, path: str) -> Any:
        if not isinstance(value, Mapping):
            raise TypeError(f"{path or cls.__name__} must be an object")
        if not names.issuperset(value):
            unknown = ", ".join(sorted(str(k) for k in set(value) - names))
            if len(unknown) > 200:
                unknown = unknown[:197] + "..."
            raise ValueError(f"unknown field(s) {unknown}")
        kwargs = {}
        prefix = f"{path}." if path else ""
        for name, convert, has_default in plan:
            if name in value:
                kwargs[name] = convert(value[name], prefix + name)
            elif not has_default:
                raise ValueError(f"{prefix}{name} is required")
        if not path:
            return cls(**kwargs)
        try:
            return cls(**kwargs)
        except EventError as exc:  # a nested record: say where it sits in the event
            raise ValueError(f"{path}: {exc}") from exc

    return record


def _build(cls: type[Any], value: Any, path: str, *, json_mode: bool) -> Any:
    return _converter(cls, json_mode)(value, path)


def to_record(event: Event) -> dict[str, Any]:
    """The Avro-ready dict of an event."""
    out: dict[str, Any] = _to_plain(event, json_mode=False)
    return out


def from_record(event_type: type[E], record: Mapping[str, Any]) -> E:
    """Build a typed event from a decoded Avro dict; invalid values raise :class:`EventError`."""
    try:
        event: E = _build(event_type, record, "", json_mode=False)
    except EventError:
        raise
    except (TypeError, ValueError) as exc:
        raise EventError(str(exc), event_type=event_type.SCHEMA) from exc
    return event


def to_json(event: Event) -> dict[str, Any]:
    """A JSON-safe dict: timestamps as ISO 8601 UTC, bytes as base64."""
    out: dict[str, Any] = _to_plain(event, json_mode=True)
    return out


def from_json(event_type: type[E], obj: Any) -> E:
    """Build an event from JSON (the ``slmops publish`` format); missing envelope fields are
    filled in (a new ``event_id``, ``occurred_at`` = now)."""
    try:
        event: E = _build(event_type, obj, "", json_mode=True)
    except EventError:
        raise
    except (TypeError, ValueError, RecursionError) as exc:  # input from anyone: all of it
        raise EventError(str(exc), event_type=event_type.SCHEMA) from exc
    return event
