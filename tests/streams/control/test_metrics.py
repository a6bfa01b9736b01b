from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from streams.control.aggregate import GroupKey, WindowAggregate, window_metrics
from streams.control.metrics import ControlMetrics
from tests.support.control_inputs import feedback, telemetry

G = GroupKey("intent", "v1", "eu")


def _samples(m: ControlMetrics) -> dict[str, float]:
    out = {}
    for fam in text_string_to_metric_families(m.exposition().decode()):
        for s in fam.samples:
            if s.labels.get("cohort") == "eu":
                out[s.name] = s.value
    return out


def _window(devices: int) -> WindowAggregate:
    agg = WindowAggregate()
    for i in range(devices):
        agg.add_telemetry(telemetry(f"d{i}", start_ms=0, requests=10, errors=1))
    agg.add_feedback(feedback(good=3, bad=1))
    return agg


def test_quality_is_exported_only_at_or_above_k_devices():
    m = ControlMetrics()
    m.window(G, window_metrics(_window(4), privacy_k=5), None)
    small = _samples(m)
    assert small["slmops_window_suppressed"] == 1
    assert "slmops_window_quality" not in small
    assert small["slmops_window_requests"] == 40

    m.window(G, window_metrics(_window(5), privacy_k=5), None)
    big = _samples(m)
    assert big["slmops_window_suppressed"] == 0
    assert big["slmops_window_quality"] == 0.75
    assert big["slmops_window_error_rate"] == 0.1

    m.window(G, window_metrics(_window(2), privacy_k=5), None)
    again = _samples(m)
    assert "slmops_window_quality" not in again, "an old value must not linger"
