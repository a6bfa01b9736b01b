from __future__ import annotations

import pytest

from streams.events import EVENT_TYPES, DeadLetter, Telemetry
from streams.events.errors import TopicError
from streams.events.topics import DAY_MS, SPECS, Catalog
from streams.kafka.connection import KafkaConnection
from tests.support.sample_events import sample_events


def test_every_event_type_has_exactly_one_topic():
    assert sorted(s.event_type.SCHEMA for s in SPECS) == sorted(EVENT_TYPES)


def test_names_carry_the_prefix():
    assert Catalog().topic_for(Telemetry) == "slmops.telemetry"
    assert Catalog("staging").topic_for(Telemetry) == "staging.telemetry"
    assert KafkaConnection(topic_prefix="x").catalog().dead_letter == "x.dead-letter"


def test_compaction_follows_the_architecture_table():
    compacted = {s.base for s in SPECS if s.compacted}
    assert compacted == {"model-registry", "rollouts", "device-status"}
    status = Catalog().resolve("device-status")
    assert int(status.configs["min.compaction.lag.ms"]) == 30 * DAY_MS


@pytest.mark.parametrize(("base", "days"), [("telemetry", 7), ("dead-letter", 14)])
def test_retention_follows_the_architecture_table(base, days):
    spec = Catalog().resolve(base)
    assert spec.configs["cleanup.policy"] == "delete"
    assert int(spec.configs["retention.ms"]) == days * DAY_MS


def test_keys_follow_the_architecture_table():
    catalog = Catalog()
    keys = {type(e).__name__: catalog.key_for(e) for e in sample_events()}
    assert keys["ModelVersion"] == b"intent:v2"
    assert keys["RolloutState"] == b"r1"
    assert keys["Telemetry"] == keys["DriftSketch"] == keys["DeviceStatus"] == b"d1"
    assert keys["Feedback"] == keys["Alert"] == keys["OptimizationRequest"] == b"intent"
    assert keys["DeadLetter"] == b"d1"


def test_resolve_accepts_short_and_full_names():
    catalog = Catalog()
    assert catalog.resolve("telemetry") is catalog.resolve("slmops.telemetry")
    with pytest.raises(TopicError, match="unknown topic"):
        catalog.resolve("telemetri")


def test_bad_prefix_is_refused():
    with pytest.raises(TopicError):
        Catalog("has space")


def test_dead_letter_topic_holds_dead_letters():
    assert Catalog().spec_for(DeadLetter).base == "dead-letter"
