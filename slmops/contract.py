"""The contract's rules beyond the Avro types, as one JSON document for other languages.

Written beside the schemas as ``streams/events/schemas/rules.json`` and printed by ``slmops
schemas --rules``; both come from the code that enforces the rules (the limits of
:mod:`streams.events.limits`, the shared histogram bounds of the control worker), and a test
fails when the file falls behind.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

RULES_FILE = "rules.json"


def _limit(limit: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for field in dataclasses.fields(limit):
        value = getattr(limit, field.name)
        if value is None or value is False:
            continue
        out[field.name] = _limit(value) if dataclasses.is_dataclass(value) else value
    out["rule"] = limit.describe()
    return out


def rules() -> dict[str, Any]:
    from streams.control.aggregate import SHARED_BOUNDS
    from streams.events.limits import LIMITS, MAX_COUNT, TIME_SPAN

    return {
        "about": (
            "What slmops consumers refuse beyond the .avsc types, per record and field: a "
            "record breaking one is refused with the reason (and dead-lettered where its "
            "consumers dead-letter); `slmops validate TOPIC FILE` checks records against all "
            "of them. count: an integer in 0..max_count; real: a finite double, zero or "
            "normal; time: within time_span_days of the reader's clock; chars: at most that "
            "many characters; identifier: no control characters; items: at most that many "
            "array or map entries."
        ),
        "max_count": MAX_COUNT,
        "time_span_days": TIME_SPAN.days,
        "limits": {
            record: {name: _limit(limit) for name, limit in fields.items()}
            for record, fields in LIMITS.items()
        },
        "shared_histogram_bounds": {
            "Telemetry": {path: list(bounds) for path, bounds in SHARED_BOUNDS.items()}
        },
    }


def rules_json() -> str:
    return json.dumps(rules(), indent=2) + "\n"
