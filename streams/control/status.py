"""The rows of ``/status`` and the status page: closed windows, alerts, source partitions.

Bounded and in memory: the page shows what this worker saw recently, the tables and topics
keep the history. A suppressed window (fewer than ``privacy_k`` devices) shows its counts but
none of its quality or drift numbers, the same floor the metrics keep.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Container, Mapping
from typing import Any

from streams.control.aggregate import GroupKey, WindowMetrics
from streams.control.policy import Judgement, PolicyState
from streams.control.windows import SourceWindows
from streams.events import Alert, to_json

_WINDOWS = 500
_ALERTS = 50


def window_row(
    group: GroupKey,
    window: int,
    window_ms: int,
    m: WindowMetrics,
    judged: Judgement,
    state: PolicyState,
) -> dict[str, Any]:
    """The status row of one closed window of one group, after the policy judged it."""
    visible = not m.suppressed
    drift = judged.drift if visible else None
    return {
        "model_id": group.model_id,
        "version": group.version,
        "cohort": group.cohort,
        "window": window,
        "window_start_ms": window * window_ms,
        "requests": m.requests,
        "errors": m.errors,
        "error_rate": m.error_rate,
        "latency_p50_ms": m.latency_p50_ms,
        "latency_p95_ms": m.latency_p95_ms,
        "devices": m.devices,
        "suppressed": m.suppressed,
        "feedback_total": m.feedback_total if visible else None,
        "quality": m.quality if visible else None,
        "drift_psi_max": drift.max_psi if drift else None,
        "drift_mean_shift": drift.mean_shift if drift else None,
        # Generation figures: null for a window that served none; the mean log-probability
        # is a quality signal, hidden below the privacy floor like quality.
        "generations": m.generations,
        "generation_abort_rate": m.aborted_rate,
        "ttft_p50_ms": m.ttft_p50_ms,
        "ttft_p95_ms": m.ttft_p95_ms,
        "inter_token_p95_ms": m.inter_token_p95_ms,
        "tokens_per_s": m.tokens_per_s,
        "mean_logprob": m.mean_logprob if visible else None,
        "breached": list(judged.breached),
        "incident_id": state.incident_id,
    }


def source_rows(
    windows: Mapping[str, SourceWindows], live: Container[str]
) -> dict[str, dict[str, Any]]:
    """Per source partition this worker reads: how far it closed, what waits, caught up or not."""
    return {
        s: {
            "closed_upto": sw.closed_upto,
            "complete_upto": sw.complete_upto,
            "read_upto_ms": sw.clock.read_upto_ms,
            "forced_windows": sw.forced,
            "pending_events": sw.pending_events,
            "live": s in live,
        }
        for s, sw in sorted(windows.items())
    }


class StatusBoard:
    """The latest closed windows and alerts of this worker, oldest dropped first."""

    def __init__(self) -> None:
        self.windows: deque[dict[str, Any]] = deque(maxlen=_WINDOWS)
        self.alerts: deque[dict[str, Any]] = deque(maxlen=_ALERTS)

    def window_closed(self, row: dict[str, Any]) -> None:
        self.windows.append(row)

    def window_late(self, group: GroupKey, window: int) -> None:
        """A late partial reached a window already shown: its row is no longer complete."""
        for row in self.windows:
            if row["window"] == window and (row["model_id"], row["version"], row["cohort"]) == (
                group.model_id,
                group.version,
                group.cohort,
            ):
                row["complete"] = False
                row["late_partials"] = int(row.get("late_partials", 0)) + 1

    def alerted(self, alert: Alert) -> None:
        self.alerts.append(to_json(alert))
