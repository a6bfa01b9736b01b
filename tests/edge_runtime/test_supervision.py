from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge_runtime.supervision import (
    MAX_REASON_CHARS,
    Backoff,
    HealthBook,
    reported_state,
    short_reason,
    status_error,
)
from streams.events import DeviceState


def test_backoff_doubles_from_the_first_delay_up_to_the_bound():
    backoff = Backoff(initial_s=0.5, max_s=4.0, jitter=0.0)
    assert [backoff.delay(n, 0.0) for n in range(1, 7)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert backoff.delay(0, 0.0) == 0.0


@given(
    failures=st.integers(min_value=1, max_value=10_000),
    rand=st.floats(min_value=0.0, max_value=1.0, exclude_max=True),
    jitter=st.floats(min_value=0.0, max_value=1.0),
)
def test_jitter_only_shortens_and_the_bound_holds_for_any_failure_count(failures, rand, jitter):
    backoff = Backoff(initial_s=0.25, max_s=30.0, jitter=jitter)
    base = min(0.25 * 2.0 ** min(failures - 1, 64), 30.0)
    delay = backoff.delay(failures, rand)
    assert base * (1 - jitter) <= delay <= base <= 30.0


def test_backoff_refuses_settings_that_cannot_work():
    with pytest.raises(ValueError, match="initial_s"):
        Backoff(initial_s=5.0, max_s=1.0)
    with pytest.raises(ValueError, match="jitter"):
        Backoff(jitter=1.5)


def test_a_failing_task_is_a_reason_until_it_succeeds_again():
    book = HealthBook(["telemetry", "updates"])
    assert book.reasons() == []
    book.failed("telemetry", OSError(28, "No space left on device"))
    record = book.failed("telemetry", OSError(28, "No space left on device"))
    assert record.failures == 2
    assert book.reasons() == [
        "telemetry failed 2 times in a row: OSError: [Errno 28] No space left on device"
    ]
    assert book.succeeded("telemetry") is True  # a recovery
    assert book.succeeded("telemetry") is False  # already healthy
    assert book.reasons() == []
    assert book.tasks["telemetry"].total_failures == 2


def test_conditions_join_task_reasons_and_report_whether_they_changed():
    book = HealthBook(["outbox"])
    assert book.condition("disk", "disk full") is True
    assert book.condition("disk", "disk full") is False
    book.failed("outbox", RuntimeError("boom"))
    assert book.reasons() == ["outbox failed once: RuntimeError: boom", "disk full"]
    assert book.condition("disk", None) is True
    assert book.reasons() == ["outbox failed once: RuntimeError: boom"]


@pytest.mark.parametrize(
    ("lifecycle", "reasons", "reported"),
    [
        (DeviceState.SERVING, [], DeviceState.SERVING),
        (DeviceState.SERVING, ["x"], DeviceState.DEGRADED),
        (DeviceState.STARTING, ["x"], DeviceState.DEGRADED),
        (DeviceState.UPDATING, ["x"], DeviceState.UPDATING),
        (DeviceState.STOPPED, ["x"], DeviceState.STOPPED),
        (DeviceState.DEGRADED, [], DeviceState.DEGRADED),
    ],
)
def test_reported_state_is_degraded_while_a_serving_device_has_reasons(
    lifecycle, reasons, reported
):
    assert reported_state(lifecycle, reasons) is reported


def test_reasons_are_one_bounded_line_and_the_status_error_keeps_the_refusal():
    long = short_reason(ValueError("line one\n" + "x" * 5000))
    assert "\n" not in long
    assert len(long) == MAX_REASON_CHARS
    assert status_error([], None) is None
    assert status_error(["telemetry failed once: E"], "intent:v2 refused: r") == (
        "telemetry failed once: E; intent:v2 refused: r"
    )
    assert len(status_error([long] * 10, "r") or "") <= 4 * MAX_REASON_CHARS
