"""Checks records run when built, so an invalid event can be neither built nor decoded."""

from __future__ import annotations

import math
import numbers
import re
import sys
import typing
from collections.abc import Callable, Mapping
from datetime import UTC, datetime

from streams.events.errors import EventError
from streams.events.limits import LIMITS, MAX_COUNT, TIME_SPAN, Limit

# Unicode category Cc is exactly these two ranges.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_MIN_NORMAL = sys.float_info.min


def fail(record: object, field: str, reason: str) -> typing.NoReturn:
    raise EventError(reason, event_type=type(record).__name__, field=field)


def check_id(record: object, field: str, value: str | None, *, optional: bool = False) -> None:
    if value is None and optional:
        return
    if not isinstance(value, str) or not value.strip():
        fail(record, field, "must be a non-empty string")


def check_number(
    record: object,
    field: str,
    value: float | None,
    *,
    low: float | None = 0.0,
    high: float | None = None,
    optional: bool = False,
) -> None:
    if value is None:
        if optional:
            return
        fail(record, field, "is required")
    if isinstance(value, bool) or not isinstance(value, int | float):
        fail(record, field, f"must be a number, got {type(value).__name__}")
    if math.isnan(value) or math.isinf(value):
        fail(record, field, f"must be finite, got {value}")
    if low is not None and value < low:
        fail(record, field, f"must be >= {low}, got {value}")
    if high is not None and value > high:
        fail(record, field, f"must be <= {high}, got {value}")


def check_window(record: object, start: datetime, end: datetime) -> None:
    if end < start:
        fail(record, "window_end", f"window ends ({end.isoformat()}) before it starts")


# --------------------------------------------------------------------------- limits

_Check = Callable[[object, str, typing.Any], None]


def _text(limit: Limit) -> _Check:
    most = typing.cast(int, limit.chars)
    identifier = limit.identifier

    def text(record: object, field: str, value: typing.Any) -> None:
        if value is None:
            return
        if not isinstance(value, str):
            fail(record, field, f"must be a string, got {type(value).__name__}")
        if len(value) > most:
            fail(record, field, f"must be at most {most} characters, got {len(value)}")
        if identifier and _CONTROL.search(value):
            fail(record, field, "must not contain control characters")

    return text


def _octets(limit: Limit) -> _Check:
    most = typing.cast(int, limit.octets)

    def octets(record: object, field: str, value: typing.Any) -> None:
        if value is not None and len(value) > most:
            fail(record, field, f"must be at most {most} bytes, got {len(value)}")

    return octets


def _count(record: object, field: str, value: typing.Any) -> None:
    if value is None:
        return
    if type(value) is not int and (
        isinstance(value, bool) or not isinstance(value, numbers.Integral)
    ):
        fail(record, field, f"must be an integer, got {type(value).__name__}")
    if not 0 <= int(value) <= MAX_COUNT:
        fail(record, field, f"must be an integer in 0..2^53, got {_clip(value)}")


def _real(record: object, field: str, value: typing.Any) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float):
        fail(record, field, f"must be a number, got {type(value).__name__}")
    if not math.isfinite(value):
        fail(record, field, f"must be finite, got {value}")
    if value and abs(value) < _MIN_NORMAL:
        fail(record, field, f"must be zero or a normal float, got subnormal {value!r}")


def _counts(record: object, field: str, values: tuple[typing.Any, ...]) -> None:
    # Histograms hold dozens of counts: checked in C when all is well, named one by one if not.
    if not values or (
        set(map(type, values)) == {int} and min(values) >= 0 and max(values) <= MAX_COUNT
    ):
        return
    for v in values:
        _count(record, field, v)


def _reals(record: object, field: str, values: tuple[typing.Any, ...]) -> None:
    # Embeddings hold thousands of values: the same idea; filter(None, ...) drops the zeros.
    if not values or (
        set(map(type, values)) == {float}
        and all(map(math.isfinite, values))
        and min(filter(None, map(abs, values)), default=1.0) >= _MIN_NORMAL
    ):
        return
    for v in values:
        _real(record, field, v)


def _time(record: object, field: str, value: typing.Any) -> None:
    if value is None:
        return
    if not isinstance(value, datetime) or value.tzinfo is None:
        fail(record, field, "must be a timezone-aware datetime")
    if abs(value - datetime.now(UTC)) > TIME_SPAN:
        fail(record, field, f"must be within 100 years of now, got {value.isoformat()}")


def _element(limit: Limit) -> _Check | None:
    if limit.chars is not None:
        return _text(limit)
    if limit.octets is not None:
        return _octets(limit)
    if limit.count:
        return _count
    if limit.real:
        return _real
    if limit.time:
        return _time
    return None


def _compile(limit: Limit) -> _Check:
    each = _element(limit)
    if limit.items is None:
        if each is None:
            raise ValueError(f"limit {limit} checks nothing")
        return each
    most = limit.items
    keys = _element(limit.keys) if limit.keys is not None else None
    vector: _Check | None = _reals if each is _real else _counts if each is _count else None

    def collection(record: object, field: str, value: typing.Any) -> None:
        if value is None:
            return
        if len(value) > most:
            fail(record, field, f"must have at most {most} entries, got {len(value)}")
        if isinstance(value, Mapping):
            if keys is not None:
                for k in value:
                    keys(record, f"{field} key", k)
            value = tuple(value.values())
        if vector is not None:
            vector(record, field, value)
        elif each is not None:
            for v in value:
                each(record, field, v)

    return collection


_PLANS: dict[str, tuple[tuple[str, _Check], ...]] = {
    record: tuple((name, _compile(limit)) for name, limit in fields.items())
    for record, fields in LIMITS.items()
}


def check_limits(record: object) -> None:
    """Refuse a record holding a value beyond :data:`~streams.events.limits.LIMITS`.

    Runs before any other check, so that no error message ever quotes an oversized value.
    """
    for name, check in _PLANS[type(record).__name__]:
        check(record, name, getattr(record, name))


def _clip(value: object, most: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= most else text[: most - 3] + "..."
