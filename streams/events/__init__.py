"""The event contract: what every deployable and every other system may rely on.

The ``.avsc`` files in ``schemas/`` are the public API; everything here mirrors them and imports
no Faust and no Kafka client (import-linter checks it), so devices, optimizers, the control plane
and producers in other languages share exactly this:

- ``records`` (with ``enums``, ``nested`` and ``validation``): one frozen dataclass per schema,
  validated when built, so an invalid event can be neither built nor decoded; ``limits``: the
  one table of what each field may hold (lengths, entry counts, ranges), stated in the docs;
- ``convert``: records to and from Avro dicts and JSON; ``codec``: Avro single-object encoding
  (``C3 01`` + CRC-64-AVRO fingerprint + body), every released schema version accepted as a
  writer (docs/wire-format.md);
- ``topics``: the topic catalog (names, keys, partitions, retention);
- ``artifact``: the signed model artifact format devices verify;
- ``membership``: which devices a rollout stage includes (decided on the device);
- ``histograms``: the shared bucket bounds that make device windows merge exactly;
- ``sketches``: latency sketches with a 2% relative error that merge exactly too;
- ``dead_letter``: the record a consumer writes for what it could not use, always small enough
  to send; ``errors``: the root of every ``streams`` error.

The names below are the records and the codec; the other modules are imported by name.
"""

from __future__ import annotations

from streams.events.codec import (
    MAGIC,
    SCHEMA_DIR,
    Codec,
    decode,
    default_codec,
    encode,
    schema_fingerprint,
)
from streams.events.convert import Converter, from_json, from_record, to_json, to_record
from streams.events.enums import (
    DeviceState,
    RolloutCommandKind,
    RolloutStatus,
    SelectorOperator,
    Severity,
    Task,
)
from streams.events.fingerprints import crc64_avro
from streams.events.nested import (
    ADAPTER_FORMAT,
    Artifact,
    CohortSelector,
    Generation,
    Histogram,
    LabeledExample,
    LabelRequirement,
    LatencySketch,
    Measurement,
    Transition,
)
from streams.events.records import (
    EVENT_TYPES,
    Alert,
    DeadLetter,
    DeviceStatus,
    DriftSketch,
    E,
    Event,
    Feedback,
    ModelVersion,
    OptimizationRequest,
    OptimizationResult,
    RolloutCommand,
    RolloutState,
    Telemetry,
    cli_name,
    event_type_named,
)

__all__ = [
    "ADAPTER_FORMAT",
    "EVENT_TYPES",
    "MAGIC",
    "SCHEMA_DIR",
    "Alert",
    "Artifact",
    "Codec",
    "CohortSelector",
    "Converter",
    "DeadLetter",
    "DeviceState",
    "DeviceStatus",
    "DriftSketch",
    "E",
    "Event",
    "Feedback",
    "Generation",
    "Histogram",
    "LabelRequirement",
    "LabeledExample",
    "LatencySketch",
    "Measurement",
    "ModelVersion",
    "OptimizationRequest",
    "OptimizationResult",
    "RolloutCommand",
    "RolloutCommandKind",
    "RolloutState",
    "RolloutStatus",
    "SelectorOperator",
    "Severity",
    "Task",
    "Telemetry",
    "Transition",
    "cli_name",
    "crc64_avro",
    "decode",
    "default_codec",
    "encode",
    "event_type_named",
    "from_json",
    "from_record",
    "schema_fingerprint",
    "to_json",
    "to_record",
]
