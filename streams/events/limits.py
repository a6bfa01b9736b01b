"""The contract's value limits: one table, read by validation and written into the ``.avsc`` docs.

Avro types admit values no consumer should hold: a 200,000-character version string, a count of
2^62, a histogram of a million buckets, subnormal floats whose exact decimal form is hundreds of
digits long. Each of those once made a worker's own state or output outgrow Kafka's 1 MB limit.
Every field of every schema (nested records included) has its limit here; records check them
when built, so producers and consumers refuse the same values with the same ``EventError``.
A test compares :data:`LIMITS` with the ``doc`` of every field, so the docs cannot drift.

The sizes are chosen well above what the fleet, the optimizers and the demo produce:

- identifiers (ids, versions, cohorts, metric and label names): 128 characters, no control
  characters — a UUID is 36, the longest generated version about 40;
- Kafka topic names: 249 characters, Kafka's own maximum;
- free text (reasons, messages, notes, errors): 4,096 characters, several lines of an error;
- labelled examples: 8,192 characters each (a prompt and its corrected answer);
- URIs 4,096 and signatures or recipe paths 1,024 characters, no control characters;
- histograms: 1,024 bounds (a classifier of 1,025 classes), so 1,025 counts;
- embeddings: 4,096 dimensions; the rest of the arrays and maps: a few dozen to 256 entries;
- integers are counts: 0..2^53, the range every JSON reader holds exactly;
- doubles are finite and zero or normal: no consumer meant a subnormal;
- timestamps within 100 years of the reader's clock.
"""

from __future__ import annotations

import dataclasses
from datetime import timedelta

MAX_COUNT = 2**53
TIME_SPAN = timedelta(days=36_525)  # 100 years


@dataclasses.dataclass(frozen=True, slots=True)
class Limit:
    """What one field may hold beyond its Avro type.

    For an array or map, ``chars``/``identifier``/``count``/``real`` apply to each element (the
    map's values) and ``keys`` to a map's keys.
    """

    chars: int | None = None
    identifier: bool = False
    octets: int | None = None
    items: int | None = None
    keys: Limit | None = None
    count: bool = False
    real: bool = False
    time: bool = False

    def describe(self) -> str:
        """The sentence the ``.avsc`` doc of the field carries."""
        parts = []
        if self.items is not None:
            parts.append(f"at most {self.items:,} entries")
        if self.keys is not None:
            parts.append(f"keys {self.keys._value_rule()}")
        value = self._value_rule()
        if value:
            parts.append(f"each {value}" if self.items is not None else value)
        return "Limit: " + "; ".join(parts) + "."

    def _value_rule(self) -> str:
        if self.chars is not None:
            rule = f"at most {self.chars:,} characters"
            return rule + ", no control characters" if self.identifier else rule
        if self.octets is not None:
            return f"at most {self.octets:,} bytes"
        if self.count:
            return "an integer in 0..2^53"
        if self.real:
            return "finite, zero or normal (no subnormals)"
        if self.time:
            return "within 100 years of the reader's clock"
        return ""


def clip(text: str, limit: Limit) -> str:
    """``text`` cut to fit ``limit`` (marked with ``...``): for producers of free text built
    from errors or other input they do not control, so that the event can still be built."""
    most = limit.chars
    if most is None or len(text) <= most:
        return text
    return text[: most - 3] + "..."


ID = Limit(chars=128, identifier=True)
TOPIC = Limit(chars=249, identifier=True)
TEXT = Limit(chars=4_096)
EXAMPLE_TEXT = Limit(chars=8_192)
URI = Limit(chars=4_096, identifier=True)
TOKEN = Limit(chars=1_024, identifier=True)
BLOB = Limit(octets=1_048_576)  # the broker's default max.message.bytes
COUNT = Limit(count=True)
REAL = Limit(real=True)
TIME = Limit(time=True)

IDS = Limit(items=64, chars=128, identifier=True)
COHORTS = Limit(items=256, chars=128, identifier=True)
LABELS = Limit(items=64, keys=ID, chars=256, identifier=True)
LABEL_VALUES = Limit(items=64, chars=256, identifier=True)
EXPRESSIONS = Limit(items=32)
METRICS = Limit(items=256, keys=ID, real=True)
MEASUREMENTS = Limit(items=64)
STAGES = Limit(items=32, real=True)
APPROVALS = Limit(items=32, count=True)
BOUNDS = Limit(items=1_024, real=True)
BUCKET_COUNTS = Limit(items=1_025, count=True)
SKETCH_COUNTS = Limit(items=4_096, count=True)
EMBEDDING = Limit(items=4_096, real=True)

_ENVELOPE = {"event_id": ID, "occurred_at": TIME, "producer": ID}

LIMITS: dict[str, dict[str, Limit]] = {
    "ModelVersion": _ENVELOPE
    | {
        "model_id": ID,
        "version": ID,
        "artifacts": Limit(items=32),
        "parent_version": ID,
        "lineage": IDS,
        "eval_metrics": METRICS,
        "labels": LABELS,
        "yanked": TEXT,
    },
    "RolloutState": _ENVELOPE
    | {
        "rollout_id": ID,
        "model_id": ID,
        "from_version": ID,
        "to_version": ID,
        "stages": STAGES,
        "stage_index": COUNT,
        "percent": REAL,
        "salt": ID,
        "reason": TEXT,
        "revision": COUNT,
        "gates": MEASUREMENTS,
        "history": Limit(items=64),  # the controller keeps the latest 50
        "approvals": APPROVALS,
        "not_before": TIME,
    },
    "RolloutCommand": _ENVELOPE
    | {
        "rollout_id": ID,
        "actor": ID,
        "note": TEXT,
        "model_id": ID,
        "from_version": ID,
        "to_version": ID,
        "stages": STAGES,
        "approvals": APPROVALS,
        "not_before": TIME,
    },
    "Telemetry": _ENVELOPE
    | {
        "device_id": ID,
        "model_id": ID,
        "model_version": ID,
        "cohort": ID,
        "hardware_profile": ID,
        "window_start": TIME,
        "window_end": TIME,
        "window_seq": COUNT,
        "request_count": COUNT,
        "error_count": COUNT,
        "latency_p50_ms": REAL,
        "latency_p95_ms": REAL,
        "memory_rss_bytes": COUNT,
    },
    "DriftSketch": _ENVELOPE
    | {
        "device_id": ID,
        "model_id": ID,
        "model_version": ID,
        "cohort": ID,
        "window_start": TIME,
        "window_end": TIME,
        "sample_count": COUNT,
        "embedding_mean": EMBEDDING,
        "embedding_var": EMBEDDING,
        "histograms": Limit(items=32, keys=ID),
    },
    "Feedback": _ENVELOPE
    | {
        "model_id": ID,
        "model_version": ID,
        "cohort": ID,
        "device_id": ID,
        "outcomes": Limit(items=64, keys=ID, count=True),
        "score": REAL,
        "examples": Limit(items=256),
    },
    "OptimizationRequest": _ENVELOPE
    | {
        "model_id": ID,
        "base_version": ID,
        "reason": TEXT,
        "incident_id": ID,
        "recipe": TOKEN,
        "hardware_profiles": IDS,
        "evidence": MEASUREMENTS,
        "max_quality_drop": REAL,
        "max_size_bytes": COUNT,
        "max_p95_latency_ms": REAL,
        "cohort": ID,
    },
    "OptimizationResult": _ENVELOPE
    | {
        "request_id": ID,
        "model_id": ID,
        "base_version": ID,
        "candidate_version": ID,
        "reason": TEXT,
        "gates": MEASUREMENTS,
        "baseline_metrics": METRICS,
        "candidate_metrics": METRICS,
        "duration_s": REAL,
        "cohort": ID,
    },
    "DeviceStatus": _ENVELOPE
    | {
        "device_id": ID,
        "cohort": ID,
        "hardware_profile": ID,
        "labels": LABELS,
        "model_id": ID,
        "model_version": ID,
        "model_sha256": ID,
        "last_known_good_version": ID,
        "last_known_good_sha256": ID,
        "rollout_id": ID,
        "last_error": TEXT,
        "base_sha256": ID,
    },
    "Alert": _ENVELOPE
    | {
        "model_id": ID,
        "model_version": ID,
        "cohort": ID,
        "kind": ID,
        "message": TEXT,
        "incident_id": ID,
        "rollout_id": ID,
        "evidence": MEASUREMENTS,
    },
    "DeadLetter": _ENVELOPE
    | {
        "source_topic": TOPIC,
        "source_partition": COUNT,
        "source_offset": COUNT,
        "original_key": BLOB,
        "original_value": BLOB,
        "reason": TEXT,
        "error_type": ID,
        "original_key_size": COUNT,
        "original_key_sha256": ID,
        "original_value_size": COUNT,
        "original_value_sha256": ID,
    },
    # Nested records, by their Avro names.
    "Histogram": {"bounds": BOUNDS, "counts": BUCKET_COUNTS},
    "LatencySketch": {"offset": COUNT, "counts": SKETCH_COUNTS, "zero_count": COUNT},
    "Generation": {
        "generations": COUNT,
        "finished_stop": COUNT,
        "finished_length": COUNT,
        "finished_cancelled": COUNT,
        "finished_error": COUNT,
        "prompt_tokens_total": COUNT,
        "output_tokens_total": COUNT,
        "decode_tokens": COUNT,
        "decode_seconds": REAL,
        "logprob_sum": REAL,
        "logprob_count": COUNT,
        "empty_answers": COUNT,
        "format_checked": COUNT,
        "format_violations": COUNT,
        "refusals": COUNT,
    },
    "Measurement": {
        "metric": ID,
        "value": REAL,
        "threshold": REAL,
        "comparison": ID,
        "detail": TEXT,
    },
    "Artifact": {
        "uri": URI,
        "sha256": ID,
        "size_bytes": COUNT,
        "format": ID,
        "precision": ID,
        "hardware_profiles": IDS,
        "signature": TOKEN,
        "key_id": ID,
        "base_sha256": ID,
    },
    "CohortSelector": {
        "cohorts": COHORTS,
        "hardware_profiles": IDS,
        "labels": LABELS,
        "expressions": EXPRESSIONS,
    },
    "LabelRequirement": {"key": ID, "values": LABEL_VALUES},
    "Transition": {
        "at": TIME,
        "stage_index": COUNT,
        "percent": REAL,
        "reason": TEXT,
        "gates": MEASUREMENTS,
    },
    "LabeledExample": {"text": EXAMPLE_TEXT, "label": EXAMPLE_TEXT},
}
