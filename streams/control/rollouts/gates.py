"""Rollout gates: is the canary group at least as good as the stable group, and within its SLOs?

Pure statistics over the aggregates of one analysis window; the rollout state machine
(:mod:`streams.control.rollouts.machine`) decides what a verdict means for the rollout.

Gates, and why each is judged the way it is:

- **Absolute SLOs** (canary error rate, p95 latency, feedback quality, drift score) are plain
  thresholds: an SLO is a promise about the canary itself, not a comparison.
- **Error rate and feedback quality relative to stable** use a one-sided two-proportion z-test
  with the pooled standard error. The false-alarm rate of one look is ``alpha``; the caller
  passes the per-look alpha (the state machine divides its per-stage alpha by the number of
  looks a stage may take, Bonferroni). The normal approximation needs enough expected counts;
  below ``min_expected_count`` in any cell the gate uses Fisher's exact test instead, which
  holds its false-alarm rate at any sample size: it fails on a significant difference, passes
  a canary worse than stable by no more than a stated margin, and leaves one worse by more than
  that but not significantly *undecided* (the window is INSUFFICIENT: the stage's evidence keeps
  adding up until the z-test applies or the deadline passes). A fixed margin alone would decide
  on noise at a few dozen answers, where one answer more is several points of rate.
- **p95 latency relative to stable** is a tail-proportion test on the latency histograms: take
  the bucket holding the *pooled* p95 and count, per group, the requests slower than its upper
  bound; a canary whose p95 regressed has a larger share of requests in that tail, which the
  same one-sided z-test detects. Histograms (not raw latencies) are what devices send, latency
  is heavily skewed (a test on means would be dominated by outliers and would not be about the
  p95), and choosing the bound from the pooled histogram keeps the two groups exchangeable under
  "no difference", so the false-alarm rate stays at ``alpha``. Without histograms, or with too
  few requests in the tail, the gate falls back to a ratio threshold on the two p95 values.
- **Drift relative to stable** is a threshold on the difference of drift scores: a drift score
  is one summary number per group with no sampling distribution we could test against.
- **Generations** (causal language models; judged only when the groups report generations):
  the p95 time to first token as an absolute SLO and against stable with the same
  tail-proportion test as latency (its histogram counts generations); the share of aborted
  generations (cancelled or failed) as an SLO and against stable with the two-proportion test;
  the mean log-probability of the chosen tokens, a label-free quality signal, as a floor and
  as a threshold on its drop from stable's (devices send its sum and count only, so there is
  no variance to test with; ``min_logprob_tokens`` tokens per group are needed to judge it);
  label-free answer quality — the share of answers not in the manifest's declared output
  format, of empty answers and of refusals — against stable with the two-proportion test (so a
  canary fails on "answers stopped being valid JSON" before any label arrives; these are
  answer-quality rates of several percent, so their small-sample margin is the feedback
  quality's, not the error rate's), and the format violation rate as an SLO
  (``max_format_violation_rate``).

Requests are counted as independent trials. Requests of one device are correlated, so with
few reporting devices the real false-alarm rate can exceed the stated one; the minimum number
of reporting devices (``GatePolicy.min_devices``) limits that.
"""

from __future__ import annotations

import dataclasses
import enum
import math

from streams.control.rollouts.statistics import (
    Alternative,
    fisher_exact,
    latency_tail_split,
    two_proportion_z,
)
from streams.events import Generation, Histogram, LatencySketch, Measurement
from streams.events.histograms import quantile
from streams.events.sketches import Sketch

P_AT_LEAST = "p >="
"""The comparison of a statistical gate; one with ``passed`` None could not decide yet."""

# --------------------------------------------------------------------------- inputs and policy


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class GroupMetrics:
    """One group's aggregates over an analysis window (canary or stable, one cohort selector).

    ``latency_ms`` is the merged latency histogram and ``latency_sketch`` the merged 2%-accurate
    sketch of the same requests (None unless every device sent one); quantiles are read from
    the sketch when there is one, else from the histogram; ``p95_latency_ms`` is used when
    neither is available. Feedback counts are judged outcomes (``feedback_good`` of
    ``feedback_total``). ``generation`` holds the group's merged generation aggregates (None:
    it served none).
    """

    devices: int
    requests: int
    errors: int
    latency_ms: Histogram | None = None
    p95_latency_ms: float | None = None
    feedback_good: int = 0
    feedback_total: int = 0
    drift: float | None = None
    generation: Generation | None = None
    latency_sketch: LatencySketch | None = None

    def __post_init__(self) -> None:
        if min(self.devices, self.requests, self.errors) < 0:
            raise ValueError("devices, requests and errors must be non-negative")
        if self.errors > self.requests:
            raise ValueError(f"errors ({self.errors}) cannot exceed requests ({self.requests})")
        if not 0 <= self.feedback_good <= self.feedback_total:
            raise ValueError("need 0 <= feedback_good <= feedback_total")
        for name in ("p95_latency_ms", "drift"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be finite and non-negative, got {value}")

    @property
    def error_rate(self) -> float | None:
        return self.errors / self.requests if self.requests else None

    @property
    def quality(self) -> float | None:
        return self.feedback_good / self.feedback_total if self.feedback_total else None

    def p95(self, q: float = 0.95) -> float | None:
        if self.latency_sketch is not None and self.latency_sketch.total:
            return Sketch.from_record(self.latency_sketch).quantile(q)
        if self.latency_ms is not None and self.latency_ms.total:
            return quantile(self.latency_ms, q)
        return self.p95_latency_ms

    def ttft(self, q: float = 0.95) -> float | None:
        """The q-quantile of time to first token, ms; None without generations."""
        return None if self.generation is None else quantile(self.generation.ttft_ms, q)


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class GatePolicy:
    """Thresholds and sample sizes; ``None`` switches an absolute gate off.

    ``alpha`` is the false-alarm rate per relative gate per stage; the state machine spreads it
    over the looks a stage may take.
    """

    alpha: float = 0.01
    min_requests: int = 500
    min_devices: int = 3
    min_reporting_fraction: float = 0.5
    min_expected_count: float = 5.0
    latency_quantile: float = 0.95
    max_error_rate: float | None = 0.05
    max_p95_latency_ms: float | None = None
    min_quality: float | None = None
    max_drift: float | None = None
    min_feedback: int = 100
    require_feedback: bool = False
    error_rate_fallback_margin: float = 0.01
    quality_fallback_margin: float = 0.05
    latency_fallback_ratio: float = 1.2
    max_drift_increase: float | None = 0.1
    max_p95_ttft_ms: float | None = None
    max_abort_rate: float | None = None
    max_format_violation_rate: float | None = None
    min_mean_logprob: float | None = None
    max_logprob_drop: float | None = 0.1
    min_logprob_tokens: int = 1000
    # Off where devices share their CPU with other work (a simulated fleet on one machine):
    # there the canary's tail latency measures the machine, not the build.
    relative_latency: bool = True
    # The k-device floor of what is published: RolloutState, which every device reads, carries
    # no value computed from fewer devices than this (the verdict still uses them).
    privacy_k: int = 1

    def __post_init__(self) -> None:
        if not 0.0 < self.alpha < 0.5:
            raise ValueError(f"alpha must be in (0, 0.5), got {self.alpha}")
        if self.min_requests < 1 or self.min_devices < 0 or self.min_feedback < 1:
            raise ValueError("min_requests and min_feedback must be >= 1, min_devices >= 0")
        if not 0.0 <= self.min_reporting_fraction <= 1.0:
            raise ValueError("min_reporting_fraction must be in [0, 1]")
        if not 0.0 < self.latency_quantile < 1.0:
            raise ValueError("latency_quantile must be in (0, 1)")
        if self.min_logprob_tokens < 1:
            raise ValueError("min_logprob_tokens must be >= 1")
        if self.privacy_k < 1:
            raise ValueError("privacy_k must be >= 1")
        for name in ("max_abort_rate", "max_format_violation_rate"):
            value = getattr(self, name)
            if value is not None and not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1]")
        if self.max_logprob_drop is not None and not self.max_logprob_drop >= 0.0:
            raise ValueError("max_logprob_drop must be non-negative")


class Verdict(enum.StrEnum):
    PASS = "PASS"
    FAIL = "FAIL"
    INSUFFICIENT = "INSUFFICIENT"  # not enough data or devices to judge: extend the window


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Judgement:
    verdict: Verdict
    reason: str
    measurements: tuple[Measurement, ...]

    @property
    def failed(self) -> tuple[Measurement, ...]:
        return tuple(m for m in self.measurements if m.passed is False)


# --------------------------------------------------------------------------- judging


def _sample_checks(
    canary: GroupMetrics,
    stable: GroupMetrics | None,
    policy: GatePolicy,
    expected_devices: int | None,
    stable_required: bool,
) -> list[Measurement]:
    checks = [
        Measurement(
            metric="canary.requests",
            value=float(canary.requests),
            threshold=float(policy.min_requests),
            comparison=">=",
            passed=canary.requests >= policy.min_requests,
        ),
        Measurement(
            metric="canary.devices",
            value=float(canary.devices),
            threshold=float(policy.min_devices),
            comparison=">=",
            passed=canary.devices >= policy.min_devices,
            detail="devices that reported in the window",
        ),
    ]
    if expected_devices:
        fraction = canary.devices / expected_devices
        checks.append(
            Measurement(
                metric="canary.reporting_fraction",
                value=fraction,
                threshold=policy.min_reporting_fraction,
                comparison=">=",
                passed=fraction >= policy.min_reporting_fraction,
                detail=f"{canary.devices} of {expected_devices} member devices reported",
            )
        )
    if stable_required:
        n = stable.requests if stable is not None else 0
        checks.append(
            Measurement(
                metric="stable.requests",
                value=float(n),
                threshold=float(policy.min_requests),
                comparison=">=",
                passed=n >= policy.min_requests,
            )
        )
    return checks


def _absolute_gates(canary: GroupMetrics, policy: GatePolicy) -> list[Measurement]:
    gates: list[Measurement] = []
    if policy.max_error_rate is not None and canary.error_rate is not None:
        gates.append(
            Measurement(
                metric="error_rate",
                value=canary.error_rate,
                threshold=policy.max_error_rate,
                comparison="<=",
                passed=canary.error_rate <= policy.max_error_rate,
                detail=f"SLO; canary {canary.errors}/{canary.requests}",
            )
        )
    p95 = canary.p95(policy.latency_quantile)
    if policy.max_p95_latency_ms is not None:
        gates.append(
            Measurement(
                metric="p95_latency_ms",
                value=p95,
                threshold=policy.max_p95_latency_ms,
                comparison="<=",
                passed=None if p95 is None else p95 <= policy.max_p95_latency_ms,
                detail="SLO" if p95 is not None else "SLO; no latency data",
            )
        )
    if policy.min_quality is not None:
        enough = canary.feedback_total >= policy.min_feedback
        q = canary.quality
        gates.append(
            Measurement(
                metric="quality",
                value=q,
                threshold=policy.min_quality,
                comparison=">=",
                passed=(q >= policy.min_quality) if enough and q is not None else None,
                detail=f"SLO; {canary.feedback_good}/{canary.feedback_total} good feedback"
                + ("" if enough else f", fewer than {policy.min_feedback}: not judged"),
            )
        )
    if policy.max_drift is not None:
        gates.append(
            Measurement(
                metric="drift",
                value=canary.drift,
                threshold=policy.max_drift,
                comparison="<=",
                passed=None if canary.drift is None else canary.drift <= policy.max_drift,
                detail="SLO" if canary.drift is not None else "SLO; no drift score",
            )
        )
    gen = canary.generation
    if gen is not None and gen.generations:
        gates += _absolute_generation_gates(canary, gen, policy)
    return gates


def _absolute_generation_gates(
    canary: GroupMetrics, gen: Generation, policy: GatePolicy
) -> list[Measurement]:
    gates: list[Measurement] = []
    if policy.max_p95_ttft_ms is not None:
        ttft = canary.ttft(policy.latency_quantile)
        gates.append(
            Measurement(
                metric="p95_ttft_ms",
                value=ttft,
                threshold=policy.max_p95_ttft_ms,
                comparison="<=",
                passed=None if ttft is None else ttft <= policy.max_p95_ttft_ms,
                detail="SLO" if ttft is not None else "SLO; no first tokens",
            )
        )
    if policy.max_abort_rate is not None:
        rate = gen.aborted / gen.generations
        gates.append(
            Measurement(
                metric="abort_rate",
                value=rate,
                threshold=policy.max_abort_rate,
                comparison="<=",
                passed=rate <= policy.max_abort_rate,
                detail=f"SLO; {gen.aborted}/{gen.generations} generations cancelled or failed",
            )
        )
    if policy.max_format_violation_rate is not None and gen.format_checked:
        rate = gen.format_violations / gen.format_checked
        gates.append(
            Measurement(
                metric="format_violation_rate",
                value=rate,
                threshold=policy.max_format_violation_rate,
                comparison="<=",
                passed=rate <= policy.max_format_violation_rate,
                detail=f"SLO; {gen.format_violations}/{gen.format_checked} checked answers "
                "not in the declared format",
            )
        )
    if policy.min_mean_logprob is not None:
        enough = gen.logprob_count >= policy.min_logprob_tokens
        mean = gen.mean_logprob
        gates.append(
            Measurement(
                metric="mean_logprob",
                value=mean,
                threshold=policy.min_mean_logprob,
                comparison=">=",
                passed=(mean >= policy.min_mean_logprob) if enough and mean is not None else None,
                detail=f"SLO; {gen.logprob_count} tokens"
                + ("" if enough else f", fewer than {policy.min_logprob_tokens}: not judged"),
            )
        )
    return gates


def _proportion_gate(
    metric: str,
    hits: tuple[int, int],
    ns: tuple[int, int],
    alternative: Alternative,
    alpha: float,
    fallback_margin: float,
    policy: GatePolicy,
    what: str,
) -> Measurement:
    test = two_proportion_z(hits[0], ns[0], hits[1], ns[1], alternative)
    counts = f"canary {hits[0]}/{ns[0]}, stable {hits[1]}/{ns[1]}"
    if test.min_expected >= policy.min_expected_count:
        return Measurement(
            metric=metric,
            value=test.p_value,
            threshold=alpha,
            comparison=P_AT_LEAST,
            passed=test.p_value >= alpha,
            detail=(
                f"one-sided two-proportion z-test ({what}): z={test.z:.3f}, "
                f"p={test.p_value:.4g}, alpha={alpha:.4g}; {counts}"
            ),
        )
    # Too few expected counts for the normal approximation: Fisher's exact test decides a
    # failure, and a canary no worse than stable by more than the stated margin passes. One
    # that looks worse by more than the margin without significance is undecided: the stage
    # keeps collecting (its evidence adds up) until the z-test applies or the deadline passes.
    diff = test.canary_rate - test.stable_rate
    if alternative is Alternative.LESS:
        diff = -diff
    p_value = fisher_exact(hits[0], ns[0], hits[1], ns[1], alternative)
    passed: bool | None
    if p_value < alpha:
        passed, outcome = False, "significant"
    elif diff <= fallback_margin:
        passed, outcome = True, "within the margin"
    else:
        passed, outcome = None, "beyond the margin but not significant: undecided"
    return Measurement(
        metric=metric,
        value=p_value,
        threshold=alpha,
        comparison=P_AT_LEAST,
        passed=passed,
        detail=(
            f"sample too small for the z-test (smallest expected count "
            f"{test.min_expected:.2f} < {policy.min_expected_count:g}): one-sided Fisher exact "
            f"test ({what}) p={p_value:.4g}, alpha={alpha:.4g}; difference {diff:+.4g} vs "
            f"margin {fallback_margin:g}: {outcome}; {counts}"
        ),
    )


def _latency_gate(
    canary: GroupMetrics, stable: GroupMetrics, policy: GatePolicy, alpha: float
) -> Measurement | None:
    q = policy.latency_quantile
    return _tail_gate(
        "p95_latency.relative",
        (canary.latency_ms, stable.latency_ms),
        (canary.p95(q), stable.p95(q)),
        policy,
        alpha,
        "requests",
    )


def _ttft_gate(
    canary: GroupMetrics, stable: GroupMetrics, policy: GatePolicy, alpha: float
) -> Measurement | None:
    if canary.generation is None or stable.generation is None:
        return None
    q = policy.latency_quantile
    return _tail_gate(
        "p95_ttft.relative",
        (canary.generation.ttft_ms, stable.generation.ttft_ms),
        (canary.ttft(q), stable.ttft(q)),
        policy,
        alpha,
        "first tokens",
    )


def _tail_gate(
    metric: str,
    hists: tuple[Histogram | None, Histogram | None],
    p95s: tuple[float | None, float | None],
    policy: GatePolicy,
    alpha: float,
    what: str,
) -> Measurement | None:
    q = policy.latency_quantile
    split = None
    if hists[0] is not None and hists[1] is not None:
        split = latency_tail_split(hists[0], hists[1], q)
    if split is not None:
        test = two_proportion_z(
            split.canary_slow, split.canary_n, split.stable_slow, split.stable_n
        )
        if test.min_expected >= policy.min_expected_count:
            return Measurement(
                metric=metric,
                value=test.p_value,
                threshold=alpha,
                comparison=P_AT_LEAST,
                passed=test.p_value >= alpha,
                detail=(
                    f"one-sided tail-proportion z-test: {what} slower than "
                    f"{split.bound_ms:g} ms (pooled p{q * 100:g} bucket), canary "
                    f"{split.canary_slow}/{split.canary_n}, stable "
                    f"{split.stable_slow}/{split.stable_n}: z={test.z:.3f}, "
                    f"p={test.p_value:.4g}, alpha={alpha:.4g}"
                ),
            )
    c95, s95 = p95s
    if c95 is None or s95 is None:
        return None
    ratio = c95 / s95 if s95 > 0 else (1.0 if c95 == 0 else math.inf)
    why = "no histograms" if split is None else f"too few {what} in the tail"
    finite = math.isfinite(ratio)
    return Measurement(
        metric=metric,
        value=ratio if finite else None,
        threshold=policy.latency_fallback_ratio,
        comparison="<=",
        passed=finite and ratio <= policy.latency_fallback_ratio,
        detail=(
            f"{why} for the tail test: threshold on canary/stable p{q * 100:g} "
            f"({c95:g} ms / {s95:g} ms)"
        ),
    )


def _relative_generation_gates(
    canary: GroupMetrics, stable: GroupMetrics, policy: GatePolicy, alpha: float
) -> list[Measurement]:
    c, s = canary.generation, stable.generation
    if c is None or s is None or not (c.generations and s.generations):
        return []
    gates = [
        _proportion_gate(
            "abort_rate.relative",
            (c.aborted, s.aborted),
            (c.generations, s.generations),
            Alternative.GREATER,
            alpha,
            policy.error_rate_fallback_margin,
            policy,
            "aborted-generation rate",
        )
    ]
    if c.format_checked and s.format_checked:
        gates.append(
            _proportion_gate(
                "format_violation_rate.relative",
                (c.format_violations, s.format_violations),
                (c.format_checked, s.format_checked),
                Alternative.GREATER,
                alpha,
                policy.quality_fallback_margin,
                policy,
                "rate of answers not in the declared format",
            )
        )
    for metric, counts, what in (
        ("empty_rate.relative", (c.empty_answers, s.empty_answers), "empty-answer rate"),
        ("refusal_rate.relative", (c.refusals, s.refusals), "refusal rate"),
    ):
        if sum(counts):
            gates.append(
                _proportion_gate(
                    metric,
                    counts,
                    (c.generations, s.generations),
                    Alternative.GREATER,
                    alpha,
                    policy.quality_fallback_margin,
                    policy,
                    what,
                )
            )
    ttft = _ttft_gate(canary, stable, policy, alpha) if policy.relative_latency else None
    if ttft is not None:
        gates.append(ttft)
    c_mean, s_mean = c.mean_logprob, s.mean_logprob
    if (
        policy.max_logprob_drop is not None
        and c_mean is not None
        and s_mean is not None
        and min(c.logprob_count, s.logprob_count) >= policy.min_logprob_tokens
    ):
        drop = s_mean - c_mean
        gates.append(
            Measurement(
                metric="mean_logprob.relative",
                value=drop,
                threshold=policy.max_logprob_drop,
                comparison="<=",
                passed=drop <= policy.max_logprob_drop,
                detail=(
                    f"threshold on stable - canary mean log-probability per token "
                    f"({s_mean:.4g} - {c_mean:.4g}; {s.logprob_count} and "
                    f"{c.logprob_count} tokens)"
                ),
            )
        )
    return gates


def _relative_gates(
    canary: GroupMetrics, stable: GroupMetrics, policy: GatePolicy, alpha: float
) -> list[Measurement]:
    gates = [
        _proportion_gate(
            "error_rate.relative",
            (canary.errors, stable.errors),
            (canary.requests, stable.requests),
            Alternative.GREATER,
            alpha,
            policy.error_rate_fallback_margin,
            policy,
            "error rate",
        )
    ]
    latency = _latency_gate(canary, stable, policy, alpha) if policy.relative_latency else None
    if latency is not None:
        gates.append(latency)
    if min(canary.feedback_total, stable.feedback_total) >= policy.min_feedback:
        gates.append(
            _proportion_gate(
                "quality.relative",
                (canary.feedback_good, stable.feedback_good),
                (canary.feedback_total, stable.feedback_total),
                Alternative.LESS,
                alpha,
                policy.quality_fallback_margin,
                policy,
                "good-feedback rate",
            )
        )
    if (
        policy.max_drift_increase is not None
        and canary.drift is not None
        and stable.drift is not None
    ):
        increase = canary.drift - stable.drift
        gates.append(
            Measurement(
                metric="drift.relative",
                value=increase,
                threshold=policy.max_drift_increase,
                comparison="<=",
                passed=increase <= policy.max_drift_increase,
                detail=f"threshold on canary - stable drift ({canary.drift:g} - {stable.drift:g})",
            )
        )
    return gates + _relative_generation_gates(canary, stable, policy, alpha)


def _feedback_check(
    canary: GroupMetrics, stable: GroupMetrics | None, policy: GatePolicy, stable_required: bool
) -> Measurement | None:
    if not policy.require_feedback:
        return None
    groups = [canary] + ([stable] if stable_required and stable is not None else [])
    least = min(g.feedback_total for g in groups)
    return Measurement(
        metric="feedback.count",
        value=float(least),
        threshold=float(policy.min_feedback),
        comparison=">=",
        passed=least >= policy.min_feedback,
        detail="judged feedback per group (smallest group)",
    )


def judge(
    canary: GroupMetrics,
    stable: GroupMetrics | None,
    policy: GatePolicy,
    *,
    alpha: float,
    stable_required: bool,
    expected_devices: int | None = None,
) -> Judgement:
    """Judge one window: FAIL if any gate fails, INSUFFICIENT if the samples are too small to
    judge or a small-sample gate could not decide, else PASS.

    ``alpha`` is the false-alarm rate of this one look for each statistical gate.
    ``stable_required`` makes a stable group with ``min_requests`` mandatory (while canarying);
    without it (at 100%, nobody is left on stable) relative gates are judged only when a stable
    group with enough requests is present.
    """
    floor = _Floor(canary, stable, policy.privacy_k)
    samples = _sample_checks(canary, stable, policy, expected_devices, stable_required)
    feedback = _feedback_check(canary, stable, policy, stable_required)
    if feedback is not None:
        samples.append(feedback)
    samples = [floor.withhold(m) for m in samples]
    short = [m for m in samples if m.passed is False]
    if short:
        what = ", ".join(_describe(m, needs=False) for m in short)
        return Judgement(
            verdict=Verdict.INSUFFICIENT,
            reason=f"not enough data: {what}",
            measurements=tuple(samples),
        )
    gates = _absolute_gates(canary, policy)
    if stable is not None and stable.requests >= policy.min_requests:
        gates += _relative_gates(canary, stable, policy, alpha)
    gates = [floor.withhold(m) for m in gates]
    measurements = tuple(samples + gates)
    failed = [m for m in gates if m.passed is False]
    if failed:
        names = ", ".join(_describe(m) for m in failed)
        return Judgement(
            verdict=Verdict.FAIL, reason=f"gate failed: {names}", measurements=measurements
        )
    undecided = [m for m in gates if m.passed is None and m.comparison == P_AT_LEAST]
    if undecided:
        names = ", ".join(m.metric for m in undecided)
        return Judgement(
            verdict=Verdict.INSUFFICIENT,
            reason=f"not enough data to decide: {names} (canary worse, not significantly)",
            measurements=measurements,
        )
    judged = sum(1 for m in gates if m.passed is True)
    return Judgement(
        verdict=Verdict.PASS,
        reason=f"all {judged} judged gates passed",
        measurements=measurements,
    )


def _describe(m: Measurement, *, needs: bool = True) -> str:
    if m.detail.startswith(WITHHELD):
        value = "withheld"
    else:
        value = "n/a" if m.value is None else f"{m.value:.4g}"
    threshold = "n/a" if m.threshold is None else f"{m.threshold:.4g}"
    if not needs:
        return f"{m.metric} {value} < {threshold}"
    return f"{m.metric} {value} (needs {m.comparison} {threshold})"


WITHHELD = "withheld:"

# Values that describe the devices of a group, not what they did: never withheld.
_COUNTS_OF_DEVICES = frozenset({"canary.devices", "canary.reporting_fraction"})
# Values computed from the canary's devices alone; every other value uses both groups'.
_CANARY_ONLY = frozenset(
    {
        "canary.requests",
        "error_rate",
        "p95_latency_ms",
        "quality",
        "drift",
        "p95_ttft_ms",
        "abort_rate",
        "format_violation_rate",
        "mean_logprob",
    }
)


@dataclasses.dataclass(frozen=True, slots=True)
class _Floor:
    """Which groups are too small to publish a value of: fewer than ``k`` devices."""

    canary: GroupMetrics
    stable: GroupMetrics | None
    k: int

    def _small(self, group: GroupMetrics | None) -> bool:
        return group is not None and group.devices < self.k

    def withhold(self, m: Measurement) -> Measurement:
        """``m`` with its value and detail withheld if a group it is computed from is under
        the floor; the threshold and the verdict stay (they are the policy and the outcome)."""
        if self.k <= 1 or m.metric in _COUNTS_OF_DEVICES:
            return m
        if m.metric == "stable.requests" or m.metric in _CANARY_ONLY:
            small = self._small(self.stable if m.metric == "stable.requests" else self.canary)
        else:
            small = self._small(self.canary) or self._small(self.stable)
        if not small:
            return m
        return dataclasses.replace(
            m, value=None, detail=f"{WITHHELD} from fewer than {self.k} devices"
        )
