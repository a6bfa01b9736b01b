from __future__ import annotations

import dataclasses
import uuid
from datetime import timedelta

from streams.control.ledger import device_history, devices_running, latest_versions, lineage
from streams.events import DeviceState, DeviceStatus, ModelVersion
from tests.support.sample_events import SHA, T0, sample

OTHER_SHA = "b" * 64


def status(device: str, minutes: int, version: str | None, **changes) -> DeviceStatus:
    base = sample(DeviceStatus)
    return dataclasses.replace(
        base,
        event_id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"{device}:{minutes}")),
        occurred_at=T0 + timedelta(minutes=minutes),
        device_id=device,
        model_version=version,
        model_sha256={"v1": SHA, "v2": OTHER_SHA}.get(version or ""),
        **changes,
    )


EVENTS = [
    status("d1", 0, None, state=DeviceState.STARTING, model_id=None),
    status("d1", 1, "v1"),
    status("d1", 5, "v1"),  # a heartbeat-like repeat: same interval
    status("d1", 10, "v2", rollout_id="r1"),
    status("d1", 20, "v1", rollout_id="r1", last_error=None),
    status("d2", 2, "v1"),
    status("d2", 12, "v2", rollout_id="r1"),
]


def test_history_merges_repeats_and_closes_intervals_at_the_next_change():
    history = device_history(EVENTS, "d1")
    assert [(i.version, i.start, i.end) for i in history] == [
        (None, T0, T0 + timedelta(minutes=1)),
        ("v1", T0 + timedelta(minutes=1), T0 + timedelta(minutes=10)),
        ("v2", T0 + timedelta(minutes=10), T0 + timedelta(minutes=20)),
        ("v1", T0 + timedelta(minutes=20), None),
    ]
    assert history[2].sha256 == OTHER_SHA
    assert history[2].rollout_id == "r1"


def test_duplicates_of_one_event_count_once():
    assert device_history(EVENTS + EVENTS, "d1") == device_history(EVENTS, "d1")


def test_which_devices_ran_a_version_at_a_time():
    at = T0 + timedelta(minutes=15)
    assert [i.device_id for i in devices_running(EVENTS, "intent", "v2", at)] == ["d1", "d2"]
    later = T0 + timedelta(minutes=25)
    assert [i.device_id for i in devices_running(EVENTS, "intent", "v2", later)] == ["d2"]
    assert [i.device_id for i in devices_running(EVENTS, "intent", "v1", later)] == ["d1"]
    assert devices_running(EVENTS, "intent", "v2", T0) == []


def test_lineage_follows_parents_and_stops_at_unknown_or_cycles():
    v2 = sample(ModelVersion)
    v1 = dataclasses.replace(v2, version="v1", parent_version="v0", occurred_at=T0)
    v3 = dataclasses.replace(v2, version="v3", parent_version="v2")
    versions = latest_versions([v1, v2, v3], "intent")
    assert [v.version for v in lineage(versions, "v3")] == ["v3", "v2", "v1"]
    looped = {"a": dataclasses.replace(v2, version="a", parent_version="a")}
    assert [v.version for v in lineage(looped, "a")] == ["a"]


def test_an_adapter_interval_records_the_base_it_ran_over():
    events = [
        status("d3", 0, "v1", base_sha256=None),
        status("d3", 5, "v2", base_sha256=SHA),  # adapter v2 (OTHER_SHA) over base v1 (SHA)
        status("d3", 9, "v2", base_sha256=SHA),  # a repeat: the same interval
    ]
    history = device_history(events, "d3")
    assert [(i.version, i.sha256, i.base_sha256) for i in history] == [
        ("v1", SHA, None),
        ("v2", OTHER_SHA, SHA),
    ]
