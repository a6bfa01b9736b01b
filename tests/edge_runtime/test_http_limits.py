from __future__ import annotations

import pytest

from edge_runtime.http_limits import Admission, HttpLimits, Verdict


def test_requests_are_admitted_up_to_the_concurrency_limit_and_released():
    admission = Admission(HttpLimits(max_concurrent=2, max_inflight_bytes=1000, max_body_bytes=500))
    first, second = admission.admit(10), admission.admit(10)
    third = admission.admit(10)
    assert [d.verdict for d in (first, second, third)] == [
        Verdict.ADMITTED,
        Verdict.ADMITTED,
        Verdict.BUSY,
    ]
    assert "2 requests in progress" in third.reason
    admission.release(first)
    admission.release(third)  # a refusal reserved nothing
    assert admission.admit(10).verdict is Verdict.ADMITTED
    assert (admission.active, admission.inflight_bytes) == (2, 20)


def test_in_flight_bytes_are_bounded_and_an_undeclared_length_reserves_the_maximum():
    admission = Admission(
        HttpLimits(max_concurrent=10, max_inflight_bytes=1000, max_body_bytes=600)
    )
    big = admission.admit(600)
    assert big.verdict is Verdict.ADMITTED
    refused = admission.admit(500)
    assert refused.verdict is Verdict.BUSY
    assert "exceed the limit of 1000" in refused.reason
    assert admission.admit(400).verdict is Verdict.ADMITTED
    admission.release(big)
    chunked = admission.admit(None)
    assert (chunked.verdict, chunked.reserved) == (Verdict.ADMITTED, 600)
    assert admission.refused_busy == 1


def test_a_body_over_the_maximum_is_too_large_whatever_is_in_flight():
    admission = Admission(HttpLimits(max_concurrent=1, max_inflight_bytes=1000, max_body_bytes=600))
    decision = admission.admit(601)
    assert decision.verdict is Verdict.TOO_LARGE
    assert "601 bytes exceeds the limit of 600" in decision.reason
    assert (admission.active, admission.refused_too_large) == (0, 1)


def test_limits_under_which_the_largest_body_could_never_be_admitted_are_refused():
    with pytest.raises(ValueError, match="could never be admitted"):
        HttpLimits(max_inflight_bytes=100, max_body_bytes=200)
    with pytest.raises(ValueError, match="at least 1"):
        HttpLimits(max_concurrent=0)


def test_the_defaults_are_the_device_settings_defaults():
    from edge_runtime.settings import EdgeSettings

    assert EdgeSettings(device_id="d").http_limits() == HttpLimits()
