"""One valid instance of every event type, for tests that walk the whole contract."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from typing import TypedDict, TypeVar

from streams.events import (
    Alert,
    Artifact,
    CohortSelector,
    DeadLetter,
    DeviceState,
    DeviceStatus,
    DriftSketch,
    Event,
    Feedback,
    Generation,
    Histogram,
    LabeledExample,
    LabelRequirement,
    LatencySketch,
    Measurement,
    ModelVersion,
    OptimizationRequest,
    OptimizationResult,
    RolloutCommand,
    RolloutCommandKind,
    RolloutState,
    RolloutStatus,
    SelectorOperator,
    Severity,
    Task,
    Telemetry,
    Transition,
    to_record,
)
from tests.support.avro import encode_with, schema

T0 = datetime(2026, 11, 1, 12, 0, 0, tzinfo=UTC)
SHA = hashlib.sha256(b"model").hexdigest()
EVENT_ID = "00000000-0000-4000-8000-000000000001"


def histogram() -> Histogram:
    return Histogram(bounds=(1.0, 5.0, 10.0), counts=(3, 4, 2, 1))


def generation() -> Generation:
    """Four generations of a window: two stopped, one at its length, one failed mid-way; three
    checked against a JSON format, one of them not JSON, one empty."""
    return Generation(
        generations=4,
        finished_stop=2,
        finished_length=1,
        finished_error=1,
        prompt_tokens=Histogram(bounds=(1.0, 5.0, 10.0), counts=(0, 1, 2, 1)),
        output_tokens=Histogram(bounds=(1.0, 5.0, 10.0), counts=(1, 1, 2, 0)),
        prompt_tokens_total=31,
        output_tokens_total=13,
        ttft_ms=Histogram(bounds=(1.0, 5.0, 10.0), counts=(0, 2, 1, 0)),
        inter_token_ms=Histogram(bounds=(1.0, 5.0, 10.0), counts=(3, 4, 2, 1)),
        decode_tokens=10,
        decode_seconds=0.0625,
        logprob_sum=-3.5,
        logprob_count=13,
        empty_answers=1,
        format_checked=3,
        format_violations=1,
        refusals=0,
    )


def measurement() -> Measurement:
    return Measurement(
        metric="error_rate", value=0.02, threshold=0.05, comparison="<=", passed=True
    )


class Envelope(TypedDict):
    """The fields every event shares, fixed so that encodings are reproducible."""

    event_id: str
    occurred_at: datetime
    producer: str


def sample_events() -> list[Event]:
    env: Envelope = {"event_id": EVENT_ID, "occurred_at": T0, "producer": "test"}
    return [
        ModelVersion(
            **env,
            model_id="intent",
            version="v2",
            task=Task.CLASSIFY,
            artifacts=(
                Artifact(
                    uri="file:///a.tar",
                    sha256=SHA,
                    size_bytes=5,
                    precision="int8-dynamic",
                    hardware_profiles=("arm64",),
                    signature="c2ln",
                    key_id="k1",
                ),
                Artifact(
                    uri="file:///a-adapter.tar",
                    sha256=SHA,
                    size_bytes=3,
                    format="onnx-adapter",
                    base_sha256=SHA,
                ),
            ),
            parent_version="v1",
            lineage=("finetune", "quantize:int8-dynamic"),
            eval_metrics={"accuracy": 0.9},
            labels={"team": "search"},
        ),
        RolloutState(
            **env,
            rollout_id="r1",
            model_id="intent",
            from_version="v1",
            to_version="v2",
            selector=CohortSelector(
                cohorts=("pilot",),
                labels={"region": "eu"},
                expressions=(
                    LabelRequirement(
                        key="tier", operator=SelectorOperator.NOT_IN, values=("free", "trial")
                    ),
                    LabelRequirement(key="gpu", operator=SelectorOperator.EXISTS),
                ),
            ),
            stages=(5.0, 25.0, 100.0),
            approvals=(1, 2),
            stage_index=1,
            percent=25.0,
            salt="s",
            status=RolloutStatus.PROGRESSING,
            reason="canary passed",
            revision=3,
            gates=(measurement(),),
            history=(
                Transition(at=T0, status=RolloutStatus.PENDING, stage_index=0, percent=0.0),
                Transition(
                    at=T0 + timedelta(minutes=10),
                    status=RolloutStatus.PROGRESSING,
                    stage_index=1,
                    percent=25.0,
                    reason="canary passed",
                    gates=(measurement(),),
                ),
            ),
        ),
        RolloutCommand(
            **env,
            rollout_id="r1",
            command=RolloutCommandKind.START,
            actor="alice",
            note="canary for the pilot fleet",
            model_id="intent",
            from_version="v1",
            to_version="v2",
            selector=CohortSelector(cohorts=("pilot",)),
            stages=(5.0, 50.0, 100.0),
            approvals=(2,),
            not_before=T0 + timedelta(hours=1),
        ),
        Telemetry(
            **env,
            device_id="d1",
            model_id="intent",
            model_version="v1",
            cohort="pilot",
            hardware_profile="arm64",
            window_start=T0,
            window_end=T0 + timedelta(seconds=10),
            window_seq=4,
            request_count=10,
            error_count=1,
            latency_ms=histogram(),
            latency_p50_ms=3.5,
            latency_p95_ms=9.0,
            confidence=histogram(),
            memory_rss_bytes=1 << 20,
            generation=generation(),
            latency_sketch=LatencySketch(offset=2080, counts=(3, 0, 4, 3)),
        ),
        DriftSketch(
            **env,
            device_id="d1",
            model_id="intent",
            model_version="v1",
            cohort="pilot",
            window_start=T0,
            window_end=T0 + timedelta(seconds=10),
            sample_count=10,
            embedding_mean=(0.1, -0.2),
            embedding_var=(1.0, 0.5),
            histograms={"input_tokens": histogram()},
        ),
        Feedback(
            **env,
            model_id="intent",
            model_version="v1",
            cohort="pilot",
            outcomes={"correct": 9, "incorrect": 1},
            score=0.9,
            examples=(LabeledExample(text="book a table", label="booking", consent=True),),
        ),
        OptimizationRequest(
            **env,
            model_id="intent",
            base_version="v1",
            reason="quality below SLO",
            incident_id="i1",
            hardware_profiles=("arm64",),
            evidence=(measurement(),),
            max_quality_drop=0.01,
            max_size_bytes=10_000_000,
            max_p95_latency_ms=20.0,
            cohort="pilot",
        ),
        OptimizationResult(
            **env,
            request_id=EVENT_ID,
            model_id="intent",
            base_version="v1",
            candidate_version="v2",
            accepted=True,
            reason="all gates passed",
            gates=(measurement(),),
            baseline_metrics={"accuracy": 0.8},
            candidate_metrics={"accuracy": 0.9},
            duration_s=12.5,
            cohort="pilot",
        ),
        DeviceStatus(
            **env,
            device_id="d1",
            cohort="pilot",
            hardware_profile="arm64",
            labels={"region": "eu"},
            state=DeviceState.SERVING,
            model_id="intent",
            model_version="v1",
            model_sha256=SHA,
            last_known_good_version="v1",
            last_known_good_sha256=SHA,
            base_sha256=SHA,
        ),
        Alert(
            **env,
            model_id="intent",
            model_version="v1",
            cohort="pilot",
            kind="quality_drop",
            severity=Severity.WARNING,
            message="quality 0.7 < 0.85",
            incident_id="i1",
            evidence=(measurement(),),
        ),
        DeadLetter(
            **env,
            source_topic="slmops.telemetry",
            source_partition=2,
            source_offset=42,
            original_key=b"d1",
            original_value=b"\x00garbage",
            reason="wrong magic",
            error_type="EventError",
            original_key_size=2,
            original_key_sha256=hashlib.sha256(b"d1").hexdigest(),
            original_value_size=8,
            original_value_sha256=hashlib.sha256(b"\x00garbage").hexdigest(),
        ),
    ]


E = TypeVar("E", bound=Event)


def sample(event_type: type[E]) -> E:
    """The sample instance of one event type."""
    return next(e for e in sample_events() if isinstance(e, event_type))


def with_overflowing_timestamp(event: Event) -> bytes:
    """``event`` encoded with ``occurred_at`` past year 9999 (2**62 ms): schema-valid Avro that
    once escaped the codec as OverflowError and crash-looped every consumer of its topic."""
    return encode_with(schema(event.SCHEMA), to_record(event) | {"occurred_at": 2**62})
