"""From closed windows to a rollout's evidence: canary and stable, merged since the stage began.

The merge stage closes windows per (model, version, cohort). A rollout is judged on its own
selector's cohorts: the canary is the groups on ``to_version``, the stable group those on
``from_version``, both from the same windows. Windows are added up from the moment the current
stage began, so a stage is judged on everything it has seen, not on the last window alone —
the sample grows until the gates can decide. Pure: no I/O, no clock.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from streams.control.rollouts.gates import GroupMetrics
from streams.control.rollouts.inputs import WindowResult
from streams.control.rollouts.state import Rollout
from streams.events import Generation, Histogram, LatencySketch
from streams.events.histograms import merge
from streams.events.sketches import Sketch


def _ms(at: datetime) -> int:
    return int(at.timestamp() * 1000)


def _at(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def metrics_to_dict(m: GroupMetrics) -> dict[str, Any]:
    return {
        "devices": m.devices,
        "requests": m.requests,
        "errors": m.errors,
        "latency": None
        if m.latency_ms is None
        else {"bounds": list(m.latency_ms.bounds), "counts": list(m.latency_ms.counts)},
        "p95": m.p95_latency_ms,
        "good": m.feedback_good,
        "feedback": m.feedback_total,
        "drift": m.drift,
        **({} if m.generation is None else {"gen": generation_to_dict(m.generation)}),
        **(
            {}
            if m.latency_sketch is None
            else {"lsk": Sketch.from_record(m.latency_sketch).to_dict()}
        ),
    }


def generation_to_dict(g: Generation) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in dataclasses.fields(g):
        value = getattr(g, f.name)
        if isinstance(value, Histogram):
            value = {"bounds": list(value.bounds), "counts": list(value.counts)}
        out[f.name] = value
    return out


def generation_from_dict(d: Mapping[str, Any]) -> Generation:
    def hist(name: str) -> Histogram:
        h = d[name]
        return Histogram(
            bounds=tuple(float(b) for b in h["bounds"]), counts=tuple(int(c) for c in h["counts"])
        )

    return Generation(
        generations=int(d["generations"]),
        finished_stop=int(d["finished_stop"]),
        finished_length=int(d["finished_length"]),
        finished_cancelled=int(d["finished_cancelled"]),
        finished_error=int(d["finished_error"]),
        prompt_tokens=hist("prompt_tokens"),
        output_tokens=hist("output_tokens"),
        prompt_tokens_total=int(d["prompt_tokens_total"]),
        output_tokens_total=int(d["output_tokens_total"]),
        ttft_ms=hist("ttft_ms"),
        inter_token_ms=hist("inter_token_ms"),
        decode_tokens=int(d["decode_tokens"]),
        decode_seconds=float(d["decode_seconds"]),
        logprob_sum=float(d["logprob_sum"]),
        logprob_count=int(d["logprob_count"]),
        # Evidence stored before these counts existed has none of them.
        empty_answers=int(d.get("empty_answers", 0)),
        format_checked=int(d.get("format_checked", 0)),
        format_violations=int(d.get("format_violations", 0)),
        refusals=int(d.get("refusals", 0)),
    )


def merge_generations(parts: Iterable[Generation]) -> Generation | None:
    """Counts and histograms add exactly; the two float sums add as floats (rollout evidence
    sums a few windows, where the last bits do not decide a gate). None for no parts."""
    result: Generation | None = None
    for g in parts:
        if result is None:
            result = g
            continue
        changes: dict[str, Any] = {}
        for f in dataclasses.fields(g):
            a, b = getattr(result, f.name), getattr(g, f.name)
            if isinstance(a, Histogram):
                merged = merge((a, b))
                assert merged is not None  # two in, one out
                changes[f.name] = merged
            elif f.name == "logprob_sum":
                changes[f.name] = min(a + b, 0.0)
            else:
                changes[f.name] = a + b
        result = dataclasses.replace(result, **changes)
    return result


def metrics_from_dict(d: Mapping[str, Any]) -> GroupMetrics:
    latency = d.get("latency")
    return GroupMetrics(
        devices=int(d["devices"]),
        requests=int(d["requests"]),
        errors=int(d["errors"]),
        latency_ms=None
        if latency is None
        else Histogram(bounds=tuple(latency["bounds"]), counts=tuple(latency["counts"])),
        p95_latency_ms=d.get("p95"),
        feedback_good=int(d.get("good", 0)),
        feedback_total=int(d.get("feedback", 0)),
        drift=d.get("drift"),
        generation=generation_from_dict(d["gen"]) if d.get("gen") is not None else None,
        # Absent in records written before sketches, and when a device sent none.
        latency_sketch=Sketch.from_dict(d["lsk"]).record() if d.get("lsk") is not None else None,
    )


def merge_metrics(parts: Iterable[GroupMetrics]) -> GroupMetrics | None:
    """Exact sums of counts and histograms; drift is the worst part's. None for no parts.

    Device counts add because a device reports in one cohort and one version per window.
    """
    parts = list(parts)
    if not parts:
        return None
    latencies = [p.latency_ms for p in parts if p.latency_ms is not None]
    drifts = [p.drift for p in parts if p.drift is not None]
    p95s = [p.p95_latency_ms for p in parts if p.p95_latency_ms is not None]
    return GroupMetrics(
        devices=sum(p.devices for p in parts),
        requests=sum(p.requests for p in parts),
        errors=sum(p.errors for p in parts),
        latency_ms=merge(latencies) if latencies else None,
        p95_latency_ms=max(p95s) if p95s and not latencies else None,
        feedback_good=sum(p.feedback_good for p in parts),
        feedback_total=sum(p.feedback_total for p in parts),
        drift=max(drifts) if drifts else None,
        generation=merge_generations(p.generation for p in parts if p.generation is not None),
        latency_sketch=_merge_sketches(parts),
    )


def _merge_sketches(parts: list[GroupMetrics]) -> LatencySketch | None:
    """Exact sum of the parts' sketches; None unless every part that served requests has one
    (a sketch of some of the requests would read as all of them)."""
    merged = Sketch()
    for p in parts:
        if p.latency_sketch is not None:
            merged.merge(Sketch.from_record(p.latency_sketch))
        elif p.requests:
            return None
    return merged.record() if merged.total else None


@dataclasses.dataclass(frozen=True, slots=True)
class GroupWindow:
    """One closed window of one (version, cohort) group of a model.

    ``complete`` is False when the window closed because its hold ran out or lost late events:
    such a window may fail a stage, never pass one.
    """

    version: str
    cohort: str
    metrics: GroupMetrics
    complete: bool = True

    def to_dict(self) -> dict[str, Any]:
        record: dict[str, Any] = {
            "version": self.version,
            "cohort": self.cohort,
            "m": metrics_to_dict(self.metrics),
        }
        if not self.complete:
            record["complete"] = False
        return record

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> GroupWindow:
        return cls(
            str(d["version"]),
            str(d["cohort"]),
            metrics_from_dict(d["m"]),
            complete=bool(d.get("complete", True)),
        )


def _in_selector(rollout: Rollout, cohort: str) -> bool:
    # Groups carry cohorts, not hardware profiles or labels: rollouts per hardware profile use
    # a cohort per profile (docs/rollouts.md).
    return not rollout.selector.cohorts or cohort in rollout.selector.cohorts


def split(rollout: Rollout, groups: Iterable[GroupWindow]) -> tuple[GroupMetrics, GroupMetrics]:
    """(canary, stable) of one window for this rollout's selector; empty groups when silent."""
    groups = [g for g in groups if _in_selector(rollout, g.cohort)]
    empty = GroupMetrics(devices=0, requests=0, errors=0)
    canary = merge_metrics(g.metrics for g in groups if g.version == rollout.to_version)
    stable = merge_metrics(g.metrics for g in groups if g.version == rollout.from_version)
    return canary or empty, stable or empty


def window_complete(rollout: Rollout, groups: Iterable[GroupWindow]) -> bool:
    """True unless a group this rollout is judged on closed incomplete."""
    judged = (rollout.to_version, rollout.from_version)
    return all(
        g.complete for g in groups if _in_selector(rollout, g.cohort) and g.version in judged
    )


@dataclasses.dataclass(frozen=True, slots=True)
class Evidence:
    """What a stage has seen so far: windows since ``since``, canary and stable added up."""

    since: datetime
    start: datetime
    end: datetime
    windows: int
    canary: GroupMetrics
    stable: GroupMetrics

    def to_dict(self) -> dict[str, Any]:
        return {
            "since": _ms(self.since),
            "start": _ms(self.start),
            "end": _ms(self.end),
            "windows": self.windows,
            "canary": metrics_to_dict(self.canary),
            "stable": metrics_to_dict(self.stable),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Evidence:
        return cls(
            since=_at(int(d["since"])),
            start=_at(int(d["start"])),
            end=_at(int(d["end"])),
            windows=int(d["windows"]),
            canary=metrics_from_dict(d["canary"]),
            stable=metrics_from_dict(d["stable"]),
        )

    def result(self) -> WindowResult:
        """The input for the state machine; at 100% there is no stable group to compare."""
        stable = self.stable if self.stable.requests or self.stable.devices else None
        return WindowResult(
            window_start=self.start, window_end=self.end, canary=self.canary, stable=stable
        )


def accumulate(
    rollout: Rollout,
    evidence: Evidence | None,
    groups: Iterable[GroupWindow],
    window_start: datetime,
    window_end: datetime,
) -> Evidence | None:
    """Add one closed window to the stage's evidence; None when the window predates the stage.

    Evidence of an earlier stage (another ``since``) is dropped: each stage is judged on its
    own traffic.
    """
    if window_start < rollout.since:
        return evidence if evidence is not None and evidence.since == rollout.since else None
    canary, stable = split(rollout, groups)
    if evidence is None or evidence.since != rollout.since:
        return Evidence(rollout.since, window_start, window_end, 1, canary, stable)
    return Evidence(
        since=evidence.since,
        start=evidence.start,
        end=max(evidence.end, window_end),
        windows=evidence.windows + 1,
        canary=_over_time(evidence.canary, canary),
        stable=_over_time(evidence.stable, stable),
    )


def _over_time(before: GroupMetrics, window: GroupMetrics) -> GroupMetrics:
    # Counts add over windows; devices do not (the same devices report every window), so the
    # busiest window's count is the honest lower bound of how many distinct devices reported.
    merged = merge_metrics([before, window])
    assert merged is not None
    return dataclasses.replace(merged, devices=max(before.devices, window.devices))
