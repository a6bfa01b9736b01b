"""Checks records run when built, so an invalid event can be neither built nor decoded."""

from __future__ import annotations

import math
import typing
from datetime import datetime

from streams.events.errors import EventError


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
