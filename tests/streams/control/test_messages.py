from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest

from streams.control.aggregate import GroupKey, WindowAggregate
from streams.control.messages import (
    ClosedWindows,
    ControllerTick,
    ForwardedCommand,
    Partial,
    Watermark,
    controller_input,
    merge_input,
)
from streams.control.rollouts.canary import GroupWindow
from streams.control.rollouts.gates import GroupMetrics
from streams.events import CohortSelector, RolloutCommand, RolloutCommandKind
from streams.events.errors import EventError
from tests.support.control_inputs import feedback, latency_hist, sketch, telemetry


def _over_json(data: dict[str, Any]) -> Any:
    # The internal topics serialise with JSON: tuples come back as lists, keys as strings.
    return json.loads(json.dumps(data))


def _aggregate() -> WindowAggregate:
    agg = WindowAggregate()
    agg.add_telemetry(telemetry("d1", start_ms=0, requests=7, errors=1, latency=latency_hist(b3=7)))
    agg.add_feedback(feedback(good=3, bad=1, device="d1", score=0.1))
    agg.add_drift(sketch("d2", start_ms=0, n=5, mean=[0.1, 0.3], var=[0.2, 0.7]))
    return agg


def _group_window(version: str) -> GroupWindow:
    metrics = GroupMetrics(
        devices=2,
        requests=40,
        errors=3,
        latency_ms=latency_hist(b2=30, b6=10),
        feedback_good=5,
        feedback_total=6,
        drift=0.25,
    )
    return GroupWindow(version=version, cohort="eu", metrics=metrics)


def test_a_partial_round_trips_over_json_with_its_exact_aggregate():
    partial = Partial("telemetry:3", 42, GroupKey("intent", "v1", "eu"), _aggregate())
    back = merge_input(_over_json(partial.to_dict()))
    assert back == partial
    assert isinstance(back, Partial)
    # Fixed-point sums survive exactly (decimal strings), not as floats.
    assert back.aggregate.score_sum == partial.aggregate.score_sum


def test_a_watermark_round_trips_over_json():
    mark = Watermark("feedback:0", 17)
    assert merge_input(_over_json(mark.to_dict())) == mark
    forced = Watermark("feedback:0", 17, complete_upto=12)
    assert merge_input(_over_json(forced.to_dict())) == forced


def test_a_partial_keeps_where_it_was_cut_and_an_incomplete_group_says_so():
    partial = Partial("telemetry:3", 42, GroupKey("intent", "v1", "eu"), _aggregate(), 90, 88)
    assert merge_input(_over_json(partial.to_dict())) == partial
    group = dataclasses.replace(_group_window("v1"), complete=False)
    closed = ClosedWindows("intent", 60_000, 120_000, (group,))
    back = controller_input(_over_json(closed.to_dict()))
    assert isinstance(back, ClosedWindows)
    assert back.groups[0].complete is False


def test_closed_windows_round_trip_over_json_with_their_histograms():
    closed = ClosedWindows("intent", 60_000, 120_000, (_group_window("v1"), _group_window("v2")))
    back = controller_input(_over_json(closed.to_dict()))
    assert back == closed
    assert isinstance(back, ClosedWindows)
    assert back.end.timestamp() == 120.0


def test_a_forwarded_command_and_a_tick_round_trip_over_json():
    cmd = RolloutCommand(
        rollout_id="r1",
        command=RolloutCommandKind.START,
        model_id="intent",
        from_version="v1",
        to_version="v2",
        selector=CohortSelector(cohorts=("eu",)),
        stages=(20.0, 100.0),
    )
    assert controller_input(_over_json(ForwardedCommand(cmd).to_dict())) == ForwardedCommand(cmd)
    assert controller_input(_over_json(ControllerTick().to_dict())) == ControllerTick()


def test_a_device_status_for_the_controller_round_trips_over_json():
    from streams.control.messages import DeviceSeen
    from streams.events import DeviceStatus
    from tests.support.sample_events import sample

    seen = DeviceSeen(sample(DeviceStatus))
    assert controller_input(_over_json(seen.to_dict())) == seen
    with pytest.raises(EventError):
        controller_input({"t": "dev", "dev": {**seen.to_dict()["dev"], "cohort": ""}})


def test_a_registry_record_for_the_controller_round_trips_over_json():
    from streams.control.messages import VersionSeen
    from streams.events import ModelVersion
    from tests.support.sample_events import sample

    seen = VersionSeen(dataclasses.replace(sample(ModelVersion), yanked="withdrawn"))
    assert controller_input(_over_json(seen.to_dict())) == seen
    with pytest.raises(EventError):
        controller_input({"t": "ver", "ver": {**seen.to_dict()["ver"], "yanked": " "}})
    with pytest.raises(ValueError, match="expected 'ver'"):
        VersionSeen.from_dict({**seen.to_dict(), "t": "dev"})


def test_records_already_on_the_internal_topics_still_decode_to_the_same_wire_form():
    # What workers sent before these records were typed; a restarted worker reads it back.
    agg = WindowAggregate()
    agg.add_telemetry(telemetry("d1", start_ms=0, requests=2))
    sent = [
        {"t": "p", "src": "drift:1", "w": 5, "g": "intent|v1|eu", "agg": agg.to_dict()},
        {"t": "m", "src": "drift:1", "upto": 5},
    ]
    for data in sent:
        assert merge_input(_over_json(data)).to_dict() == data
    window = {
        "t": "window",
        "model": "intent",
        "start": 5000,
        "end": 6000,
        "groups": [_group_window("v1").to_dict()],
    }
    assert _over_json(controller_input(window).to_dict()) == _over_json(window)
    assert controller_input({"t": "tick"}).to_dict() == {"t": "tick"}


@pytest.mark.parametrize(
    "data",
    [
        {"t": "x", "src": "drift:1", "upto": 5},
        {"src": "drift:1", "upto": 5},
        {"t": "m", "src": "drift:1"},
        {"t": "m", "src": "drift:1", "upto": "soon"},
    ],
)
def test_a_record_that_is_no_merge_input_raises_what_the_merge_agent_dead_letters(data):
    with pytest.raises((KeyError, ValueError)):
        merge_input(data)


def test_a_record_is_not_decoded_as_another_kind():
    with pytest.raises(ValueError, match="expected 'p'"):
        Partial.from_dict(Watermark("drift:1", 5).to_dict())
    with pytest.raises(ValueError, match="unknown controller record"):
        controller_input({"t": "p"})
