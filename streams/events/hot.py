"""Telemetry decoded for the control plane's hot loop: the values a window adds, nothing else.

``Codec.decode`` builds and validates frozen dataclasses, about 60 µs a Telemetry record, while
a window needs a dozen of its values. :class:`HotTelemetry` reads the current writer's bytes
itself (``avro_read``): the shared histogram bounds are compared as bytes, not read as floats,
and a block of one-byte counts is read in one slice; the values are checked as they are read.
Bytes of an older writer, or in a legal but rare shape (arrays in several blocks, say), are
read with fastavro against copies of the schemas without logical types (timestamps stay epoch
milliseconds, the event id a string) and checked in one pass over the plain record.

The pass is conservative. It accepts a record only in the common shape (the shared histogram
bounds, no generation, every value well inside its range) and only when it meets every check
that building a :class:`~streams.events.Telemetry` and the contract's limits run. Anything else
returns None and the caller takes the full path, which either builds the event or refuses it
with the contract's own reason. So the fast path never accepts what the full path refuses, and
every refusal reads as before; the tests hold both paths to that on mutated records. The hand
reader is tied to the field list of the schema it was written for; a schema with other fields
turns it off (``enabled``: fastavro then reads every record), and a test fails then.
"""

from __future__ import annotations

import io
import re
import struct
import sys
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import fastavro

from streams.events.avro_read import (
    CONTROL,
    ID_CHARS,
    Odd,
    doubles_block,
    read_counts,
    read_envelope,
    read_id,
    read_long,
)
from streams.events.codec import _HEADER_LEN, MAGIC, Codec
from streams.events.histograms import LATENCY_MS_BOUNDS, UNIT_BOUNDS
from streams.events.limits import MAX_COUNT, TIME_SPAN
from streams.events.nested import SKETCH_KEYS, Generation
from streams.events.records import Telemetry

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Times this close to the 100-year limit take the full path, which judges them to the
# millisecond against its own clock.
_SPAN_MS = (TIME_SPAN - timedelta(days=1)) // timedelta(milliseconds=1)
# The canonical form ``str(uuid.UUID(...))`` gives: the full path normalises other spellings,
# and duplicates are found by the normalised id.
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_MIN_NORMAL = sys.float_info.min
_INF = float("inf")
_LATENCY = list(LATENCY_MS_BOUNDS)
_CONFIDENCE = list(UNIT_BOUNDS)
_LATENCY_BUCKETS = len(LATENCY_MS_BOUNDS) + 1
_CONFIDENCE_BUCKETS = len(UNIT_BOUNDS) + 1
_LATENCY_BYTES = doubles_block(LATENCY_MS_BOUNDS)
_CONFIDENCE_BYTES = doubles_block(UNIT_BOUNDS)
_double = struct.Struct("<d").unpack_from

_HISTOGRAM = ("record Histogram", (("bounds", ("array", "double")), ("counts", ("array", "long"))))
# The fields, in order, and types the hand reader was written for (logical types aside: they
# do not change the bytes). Of a generation only the union's shape matters: a record with
# one is left to the other paths.
_FIELDS: tuple[tuple[str, Any], ...] = (
    ("event_id", "string"),
    ("occurred_at", "long"),
    ("producer", "string"),
    ("device_id", "string"),
    ("model_id", "string"),
    ("model_version", "string"),
    ("cohort", "string"),
    ("hardware_profile", "string"),
    ("window_start", "long"),
    ("window_end", "long"),
    ("window_seq", "long"),
    ("request_count", "long"),
    ("error_count", "long"),
    ("latency_ms", _HISTOGRAM),
    ("latency_p50_ms", ("null", "double")),
    ("latency_p95_ms", ("null", "double")),
    ("confidence", "Histogram"),
    ("memory_rss_bytes", "long"),
    ("generation", ("null", "record Generation")),
    (
        "latency_sketch",
        (
            "null",
            (
                "record LatencySketch",
                (("offset", "long"), ("counts", ("array", "long")), ("zero_count", "long")),
            ),
        ),
    ),
)


def epoch_ms(dt: datetime) -> int:
    """Exact epoch milliseconds of an aware datetime (``timestamp() * 1000`` can be 1 ms off)."""
    return (dt - _EPOCH) // timedelta(milliseconds=1)


class TelemetryCounts:
    """What a window adds from one Telemetry record, from either decode path.

    The histograms use the shared bounds (``streams.events.histograms``); ``sketch_counts`` is
    None when the record carried no latency sketch.
    """

    __slots__ = (
        "cohort",
        "confidence_counts",
        "device_id",
        "error_count",
        "event_id",
        "generation",
        "latency_counts",
        "model_id",
        "model_version",
        "request_count",
        "sketch_counts",
        "sketch_offset",
        "sketch_zero",
        "window_start_ms",
    )

    def __init__(
        self,
        event_id: str,
        device_id: str,
        model_id: str,
        model_version: str,
        cohort: str,
        window_start_ms: int,
        request_count: int,
        error_count: int,
        latency_counts: Sequence[int],
        confidence_counts: Sequence[int],
        sketch_offset: int = 0,
        sketch_counts: Sequence[int] | None = None,
        sketch_zero: int = 0,
        generation: Generation | None = None,
    ) -> None:
        self.event_id = event_id
        self.device_id = device_id
        self.model_id = model_id
        self.model_version = model_version
        self.cohort = cohort
        self.window_start_ms = window_start_ms
        self.request_count = request_count
        self.error_count = error_count
        self.latency_counts = latency_counts
        self.confidence_counts = confidence_counts
        self.sketch_offset = sketch_offset
        self.sketch_counts = sketch_counts
        self.sketch_zero = sketch_zero
        self.generation = generation

    @classmethod
    def of(cls, event: Telemetry) -> TelemetryCounts:
        """The counts of a built event; its histograms' bounds are the caller's to check."""
        sketch = event.latency_sketch
        return cls(
            event.event_id,
            event.device_id,
            event.model_id,
            event.model_version,
            event.cohort,
            epoch_ms(event.window_start),
            event.request_count,
            event.error_count,
            event.latency_ms.counts,
            event.confidence.counts,
            sketch.offset if sketch is not None else 0,
            sketch.counts if sketch is not None else None,
            sketch.zero_count if sketch is not None else 0,
            event.generation,
        )

    def as_tuple(self) -> tuple[Any, ...]:
        """Every value, sequences as tuples: what tests compare across the two paths."""
        return tuple(
            tuple(v) if isinstance(v, list) else v
            for v in (getattr(self, name) for name in self.__slots__)
        )


def plain_schema(schema: Any) -> Any:
    """``schema`` without its logical types: the same bytes, read as plain longs and strings."""
    if isinstance(schema, Mapping):
        return {k: plain_schema(v) for k, v in schema.items() if k != "logicalType"}
    if isinstance(schema, list):
        return [plain_schema(s) for s in schema]
    return schema


def _parse(schema: Mapping[str, Any]) -> Any:
    return fastavro.parse_schema(plain_schema(schema), named_schemas={})


def _real_ok(x: float | None) -> bool:
    # None, or a finite non-negative double that is zero or normal; NaN fails every comparison.
    return x is None or (0.0 <= x < _INF and (x == 0.0 or x >= _MIN_NORMAL))


def layout(schema: Any, opaque: frozenset[str] = frozenset({"Generation"})) -> Any:
    """A schema as the bytes see it: names, order and types, no docs, defaults or logical
    types; records named in ``opaque`` stand as their name alone."""
    if isinstance(schema, list):
        return tuple(layout(s, opaque) for s in schema)
    if not isinstance(schema, Mapping):
        return schema
    kind = schema["type"]
    if kind == "record":
        name = f"record {schema['name']}"
        if schema["name"] in opaque:
            return name
        return name, tuple((f["name"], layout(f["type"], opaque)) for f in schema["fields"])
    if kind == "array":
        return "array", layout(schema["items"], opaque)
    if kind == "map":
        return "map", layout(schema["values"], opaque)
    return layout(kind, opaque)


class HotTelemetry:
    """Telemetry bytes into :class:`TelemetryCounts`, or None for the full path to judge."""

    def __init__(self, codec: Codec) -> None:
        current, writers = codec.schemas(Telemetry.SCHEMA)
        self._reader = _parse(current)
        current_fp = self._fingerprint = codec.fingerprint(Telemetry)
        self.enabled = layout(current)[1] == _FIELDS
        # The current schema needs no resolution: fastavro reads it without a reader schema.
        self._writers: dict[bytes, tuple[Any, Any]] = {
            fp: (self._reader, None) if fp == current_fp else (_parse(schema), self._reader)
            for fp, schema in writers.items()
        }

    def decode(self, data: bytes) -> TelemetryCounts | None:
        if type(data) is not bytes or data[:2] != MAGIC:
            return None
        fingerprint = data[2:_HEADER_LEN]
        if self.enabled and fingerprint == self._fingerprint:
            try:
                return _read(data, int(time.time() * 1000))
            except (Odd, IndexError, ValueError, UnicodeDecodeError, struct.error):
                pass  # a rarer shape, or broken: fastavro reads it, and the full path judges
        found = self._writers.get(fingerprint)
        if found is None:
            return None
        body = io.BytesIO(data)
        body.seek(_HEADER_LEN)
        try:
            r = fastavro.schemaless_reader(body, found[0], found[1])
        except Exception:  # the full path names what is wrong
            return None
        if body.tell() != len(data) or type(r) is not dict:
            return None
        return _accept(r, int(time.time() * 1000))


def _real(buf: bytes, pos: int) -> tuple[float | None, int]:
    """A ``["null", "double"]`` that is None or a finite non-negative zero-or-normal double."""
    branch = buf[pos]
    if branch == 0:
        return None, pos + 1
    if branch != 2:
        raise Odd
    x = _double(buf, pos + 1)[0]
    if not _real_ok(x):
        raise Odd
    return x, pos + 9


def envelope_ok(
    ids: tuple[str, int, str, str, str, str, str], start: int, end: int, now_ms: int
) -> bool:
    """The checks of a device event's opening fields (see ``read_envelope``) and its window
    that a hot reader runs: a canonical uuid, no blank id, times well inside the limits."""
    event_id, occurred, producer, device, model, version, cohort = ids
    low, high = now_ms - _SPAN_MS, now_ms + _SPAN_MS
    return (
        _UUID.fullmatch(event_id) is not None
        and bool(device.strip() and model.strip() and version.strip() and cohort.strip())
        and bool(producer.strip())
        and low < occurred < high
        and low < start <= end < high
    )


def _checked(
    ids: tuple[str, int, str, str, str, str, str],
    start: int,
    end: int,
    seq: int,
    requests: int,
    errors: int,
    rss: int,
    lat_counts: list[int],
    conf_counts: list[int],
    sketch: tuple[int, list[int], int] | None,
    now_ms: int,
) -> TelemetryCounts | None:
    """The checks both readers share, and the counts if they pass. The callers have checked
    what they read differently: ids within their limits and free of control characters, the
    quantiles, the histogram bounds, and that no count is negative."""
    if (
        not envelope_ok(ids, start, end, now_ms)
        or not 0 <= errors <= requests <= MAX_COUNT
        or not 0 <= seq <= MAX_COUNT
        or not 0 <= rss <= MAX_COUNT
        or len(lat_counts) != _LATENCY_BUCKETS
        or len(conf_counts) != _CONFIDENCE_BUCKETS
        or max(lat_counts) > MAX_COUNT
        or max(conf_counts) > MAX_COUNT
    ):
        return None
    offset, sketch_counts, zero = sketch if sketch is not None else (0, None, 0)
    if sketch_counts is not None and not (
        0 <= offset <= MAX_COUNT
        and 0 <= zero <= MAX_COUNT
        and offset + len(sketch_counts) <= SKETCH_KEYS
        and (not sketch_counts or max(sketch_counts) <= MAX_COUNT)
        and zero + sum(sketch_counts) == sum(lat_counts)
    ):
        return None
    event_id, _, _, device, model, version, cohort = ids
    return TelemetryCounts(
        event_id,
        device,
        model,
        version,
        cohort,
        start,
        requests,
        errors,
        lat_counts,
        conf_counts,
        offset,
        sketch_counts,
        zero,
    )


def _read(buf: bytes, now_ms: int) -> TelemetryCounts | None:
    """The current writer's record read and checked as :func:`_accept` checks a plain one:
    None for a record that fails a check, Odd (or an IndexError past the end) for bytes in
    another shape."""
    pos = _HEADER_LEN
    ids, pos = read_envelope(buf, pos)
    _hardware, pos = read_id(buf, pos)
    start, pos = read_long(buf, pos)
    end, pos = read_long(buf, pos)
    seq, pos = read_long(buf, pos)
    requests, pos = read_long(buf, pos)
    errors, pos = read_long(buf, pos)
    if not buf.startswith(_LATENCY_BYTES, pos):
        raise Odd
    lat_counts, pos = read_counts(buf, pos + len(_LATENCY_BYTES), _LATENCY_BUCKETS)
    _p50, pos = _real(buf, pos)
    _p95, pos = _real(buf, pos)
    if not buf.startswith(_CONFIDENCE_BYTES, pos):
        raise Odd
    conf_counts, pos = read_counts(buf, pos + len(_CONFIDENCE_BYTES), _CONFIDENCE_BUCKETS)
    rss, pos = read_long(buf, pos)
    if buf[pos] != 0:  # a generation, or a broken union
        raise Odd
    branch = buf[pos + 1]
    pos += 2
    sketch = None
    if branch == 2:
        offset, pos = read_long(buf, pos)
        sketch_counts, pos = read_counts(buf, pos, SKETCH_KEYS)
        zero, pos = read_long(buf, pos)
        sketch = (offset, sketch_counts, zero)
    elif branch != 0:
        raise Odd
    if pos != len(buf):
        raise Odd
    return _checked(
        ids, start, end, seq, requests, errors, rss, lat_counts, conf_counts, sketch, now_ms
    )


def _accept(r: dict[str, Any], now_ms: int) -> TelemetryCounts | None:
    """The counts of plain record ``r`` if it passes every check, else None."""
    if r["generation"] is not None:
        return None
    device, model, version, cohort = r["device_id"], r["model_id"], r["model_version"], r["cohort"]
    hardware, producer = r["hardware_profile"], r["producer"]
    if (
        len(device) > ID_CHARS
        or len(model) > ID_CHARS
        or len(version) > ID_CHARS
        or len(cohort) > ID_CHARS
        or len(hardware) > ID_CHARS
        or len(producer) > ID_CHARS
        or CONTROL.search(device + model + version + cohort + hardware + producer) is not None
        or not (_real_ok(r["latency_p50_ms"]) and _real_ok(r["latency_p95_ms"]))
    ):
        return None
    latency, confidence, sketch = r["latency_ms"], r["confidence"], r["latency_sketch"]
    lat_counts, conf_counts = latency["counts"], confidence["counts"]
    packed: tuple[int, list[int], int] | None = (
        None if sketch is None else (sketch["offset"], sketch["counts"], sketch["zero_count"])
    )
    sketch_counts = None if packed is None else packed[1]
    if (
        latency["bounds"] != _LATENCY
        or confidence["bounds"] != _CONFIDENCE
        or min(lat_counts, default=0) < 0
        or min(conf_counts, default=0) < 0
        or (sketch_counts is not None and min(sketch_counts, default=0) < 0)
    ):
        return None
    ids = (r["event_id"], r["occurred_at"], producer, device, model, version, cohort)
    return _checked(
        ids,
        r["window_start"],
        r["window_end"],
        r["window_seq"],
        r["request_count"],
        r["error_count"],
        r["memory_rss_bytes"],
        lat_counts,
        conf_counts,
        packed,
        now_ms,
    )
