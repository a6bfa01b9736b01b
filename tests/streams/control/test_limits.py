"""The worker's caps: folding into 'other', refusals, size checks, bounded label sets."""

from __future__ import annotations

import json
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from streams.control.aggregate import GroupKey, WindowAggregate, merge_all, window_metrics
from streams.control.errors import LimitExceeded
from streams.control.limits import OTHER, LabelBudget, bound_groups, check_size, encoded_size
from streams.control.messages import Partial
from streams.control.metrics import ControlMetrics
from streams.control.settings import StateLimits
from tests.support.control_inputs import sketch, telemetry

START = 1_700_000_000_000


def agg_of(device: str, *, model: str = "intent", version: str = "v1", cohort: str = "eu",
           requests: int = 10) -> WindowAggregate:  # fmt: skip
    agg = WindowAggregate()
    agg.add_telemetry(
        telemetry(
            device, start_ms=START, model=model, version=version, cohort=cohort, requests=requests
        )
    )
    return agg


def test_versions_past_the_cap_fold_into_other_and_the_models_total_stays_exact():
    groups = {
        GroupKey("intent", f"{i:03d}" + "v" * 125, "eu"): agg_of(f"d{i}", requests=i + 1)
        for i in range(3000)
    }
    out = bound_groups(groups, StateLimits(max_versions_per_model=10))
    versions = {k.version for k in out.kept}
    assert len(out.kept) == 11
    assert OTHER in versions
    # The heaviest versions keep their own rows.
    assert {f"{i:03d}" + "v" * 125 for i in range(2990, 3000)} <= versions
    assert out.folded == 2990
    assert not out.refused
    total = merge_all(out.kept.values())
    assert total.request_count == sum(range(1, 3001))
    assert len(total.devices) == 3000
    # The input is not changed by folding.
    assert sum(a.request_count for a in groups.values()) == sum(range(1, 3001))


def test_cohorts_fold_per_model_and_a_model_past_the_cap_is_refused():
    groups = {
        GroupKey(f"m{m}", "v1", f"c{c}"): agg_of(f"d{m}-{c}", requests=100 - m)
        for m in range(5)
        for c in range(4)
    }
    out = bound_groups(groups, StateLimits(max_models=3, max_cohorts_per_model=2))
    assert {k.model_id for k in out.kept} == {"m0", "m1", "m2"}
    # Equal weights: the first names are kept, the rest fold.
    assert {k.cohort for k in out.kept if k.model_id == "m0"} == {"c0", "c1", OTHER}
    assert sum(1 for k in out.kept if k.cohort == OTHER) == 3
    assert {r.group.model_id for r in out.refused} == {"m3", "m4"}
    assert {r.error.limit for r in out.refused} == {"max_models"}


def test_a_group_past_the_windows_cap_is_refused_with_its_reason():
    groups = {GroupKey(f"m{i}", "v1", "eu"): agg_of(f"d{i}") for i in range(5)}
    out = bound_groups(groups, StateLimits(max_groups_per_window=3))
    assert len(out.kept) == 3
    assert len(out.refused) == 2
    assert all("more than 3 groups" in str(r.error) for r in out.refused)


def test_a_partial_with_a_200_kb_control_character_version_is_too_large_to_write():
    version = "\x01" * 200_000  # 6 bytes each once JSON-escaped
    partial = Partial("telemetry:0", 1, GroupKey("intent", version, "eu"), agg_of("d0"))
    with pytest.raises(LimitExceeded, match="max_message_bytes"):
        check_size("partial", partial.to_dict(), StateLimits().max_message_bytes)
    assert encoded_size(partial.to_dict()) > 1_000_000


def test_check_size_measures_what_the_json_serializer_writes():
    value = {"a": "é\x01"}
    assert check_size("x", value, 100) == len(json.dumps(value).encode())


def test_a_sketch_of_tiny_floats_stays_small_in_the_aggregate():
    # The contract refuses subnormals; the smallest normal floats cost as much as exact fractions.
    tiny = [sys.float_info.min * (i + 1) for i in range(2000)]
    agg = WindowAggregate()
    agg.add_drift(sketch("d0", start_ms=START, n=7, mean=tiny, var=tiny))
    wire = 2000 * 2 * 8
    assert encoded_size(agg.to_dict()) < wire  # was 82 times the sketch as exact fractions


def test_fixed_point_moments_merge_exactly_in_any_order():
    a, b = WindowAggregate(), WindowAggregate()
    a.add_drift(sketch("d0", start_ms=START, n=3, mean=[0.1, -2.5], var=[0.3, 1.0]))
    b.add_drift(sketch("d1", start_ms=START, n=5, mean=[0.7, 4.25], var=[0.2, 0.5]))
    ab, ba = merge_all([a, b]), merge_all([b, a])
    assert ab.to_dict() == ba.to_dict()
    means, variances = ab.embedding_moments()
    assert means == pytest.approx([(3 * 0.1 + 5 * 0.7) / 8, (3 * -2.5 + 5 * 4.25) / 8], abs=1e-15)
    pooled = (3 * (0.3 + 0.01) + 5 * (0.2 + 0.49)) / 8 - means[0] ** 2
    assert variances[0] == pytest.approx(pooled, abs=1e-15)


def test_records_written_with_exact_fractions_still_read():
    agg = WindowAggregate()
    agg.add_drift(sketch("d0", start_ms=START, n=2, mean=[0.5], var=[0.25]))
    old = agg.to_dict()
    old["es"] = [["1", "1"]]  # 2 * 0.5
    old["eq"] = [["1", "1"]]  # 2 * (0.25 + 0.25)
    old["ss"] = ["0", "1"]
    back = WindowAggregate.from_dict(old)
    assert back.to_dict() == agg.to_dict()


def test_an_embedding_value_out_of_range_is_refused():
    from streams.control.errors import AggregationError

    with pytest.raises(AggregationError, match="embedding"):
        WindowAggregate().add_drift(sketch("d0", start_ms=START, n=1, mean=[1e300], var=[0.0]))


def test_label_budget_keeps_known_label_sets_and_folds_new_ones():
    budget = LabelBudget(2)
    assert budget.labels("g", ("a",)) == ("a",)
    assert budget.labels("g", ("b",)) == ("b",)
    assert budget.labels("g", ("c", "x")) == (OTHER, OTHER)
    assert budget.labels("g", ("a",)) == ("a",)
    assert budget.folded == {"g": 1}
    budget.forget("g", ("a",))
    assert budget.labels("g", ("c",)) == ("c",)


def test_3000_groups_make_a_bounded_number_of_series():
    metrics = ControlMetrics(max_label_values=50)
    for i in range(3000):
        g = GroupKey(f"m{i % 10}", f"v{i}", f"c{i % 7}")
        agg = agg_of(f"d{i}", model=g.model_id, version=g.version, cohort=g.cohort)
        metrics.window(g, window_metrics(agg, privacy_k=1), None)
        metrics.judged(g, 1.0, 0)
    families = list(text_string_to_metric_families(metrics.exposition().decode()))
    requests = next(f for f in families if f.name == "slmops_window_requests")
    assert len(requests.samples) == 51  # 50 label sets and "other"
    folded = next(f for f in families if f.name == "slmops_label_values_folded")
    (total,) = [s for s in folded.samples if s.name.endswith("_total")]
    assert total.labels == {"metric": "group"}
    assert total.value == 2950 * 2  # window() and judged() both reported each folded group


def test_stage_two_folds_a_version_new_to_a_full_window_and_keeps_open_ones():
    from streams.control.limits import merge_target

    limits = StateLimits(max_versions_per_model=2, max_cohorts_per_model=1)
    open_groups = [GroupKey("intent", v, "eu").encode() for v in ("v1", "v2")]
    open_groups.append(GroupKey("other-model", "v9", "us").encode())
    assert merge_target(open_groups, GroupKey("intent", "v2", "eu"), limits) == GroupKey(
        "intent", "v2", "eu"
    )
    assert merge_target(open_groups, GroupKey("intent", "v3", "us"), limits) == GroupKey(
        "intent", OTHER, OTHER
    )
    # Another model's names do not count against this one.
    assert merge_target(open_groups, GroupKey("third", "v3", "us"), limits) == GroupKey(
        "third", "v3", "us"
    )


def test_a_refused_record_makes_a_valid_dead_letter():
    import asyncio

    from streams.control.dead_letters import DeadLetters
    from streams.control.guard import WriteGuard
    from streams.control.windows import ClosedPartial
    from streams.events import DeadLetter, default_codec

    sent: list[DeadLetter] = []

    class Topic:
        async def send(self, *, key: bytes, value: DeadLetter) -> None:
            default_codec().encode(value)  # what the Faust schema does on send
            sent.append(value)

    metrics = ControlMetrics()
    guard = WriteGuard(
        StateLimits(),
        internal_topic="app-partials",
        metrics=metrics,
        dead_letters=DeadLetters(Topic(), "w1", metrics),
    )
    groups = {GroupKey("intent", "\x01" * 200_000, "eu"): agg_of("d0")}
    closed = ClosedPartial(1, groups, {}, complete=True)
    assert asyncio.run(guard.partials("telemetry:0", closed, cut_at=5)) == []
    (letter,) = sent
    assert letter.source_topic == "app-partials"
    assert "max_message_bytes" in letter.reason
    assert len(letter.original_value or b"") <= 64 * 1024


@given(
    names=st.lists(
        st.tuples(st.sampled_from("abc"), st.integers(0, 9), st.integers(0, 4), st.integers(1, 50)),
        max_size=60,
    ),
    versions=st.integers(1, 4),
    cohorts=st.integers(1, 3),
)
def test_folding_never_changes_a_kept_models_totals(names, versions, cohorts):
    groups: dict[GroupKey, WindowAggregate] = {}
    for model, v, c, requests in names:
        groups.setdefault(GroupKey(model, f"v{v}", f"c{c}"), WindowAggregate()).merge_from(
            agg_of(f"{model}{v}{c}", model=model, requests=requests)
        )
    limits = StateLimits(max_versions_per_model=versions, max_cohorts_per_model=cohorts)
    out = bound_groups(groups, limits)
    assert not out.refused
    for model in {k.model_id for k in groups}:
        kept = [a for k, a in out.kept.items() if k.model_id == model]
        given_ = [a for k, a in groups.items() if k.model_id == model]
        assert merge_all(kept).to_dict() == merge_all(given_).to_dict()
        assert len({k.version for k in out.kept if k.model_id == model} - {OTHER}) <= versions
        assert len({k.cohort for k in out.kept if k.model_id == model} - {OTHER}) <= cohorts


def test_long_device_ids_cost_a_digest_each_and_old_records_with_ids_still_count_alike():
    from streams.control.aggregate import device_digest

    agg = WindowAggregate()
    for i in range(40_000):
        agg.devices.add(device_digest(f"{i:06d}" + "x" * 122))
    assert encoded_size(agg.to_dict()) < StateLimits().max_message_bytes
    old = agg_of("d1").to_dict()
    old["dev"] = ["d1"]
    del old["dh"]
    assert WindowAggregate.from_dict(old).devices == agg_of("d1").devices


def test_a_folded_partial_carries_the_cut_and_the_newest_offset_of_the_groups_folded_in():
    import asyncio

    from streams.control.dead_letters import DeadLetters
    from streams.control.guard import WriteGuard
    from streams.control.windows import ClosedPartial

    class Topic:
        async def send(self, *, key: bytes, value: object) -> None:
            raise AssertionError("nothing is refused here")

    metrics = ControlMetrics()
    guard = WriteGuard(
        StateLimits(max_versions_per_model=1),
        internal_topic="app-partials",
        metrics=metrics,
        dead_letters=DeadLetters(Topic(), "w1", metrics),
    )
    keys = [GroupKey("intent", v, "eu") for v in ("v1", "v2", "v3")]
    groups = {k: agg_of(f"d{i}", version=k.version, requests=30 - i) for i, k in enumerate(keys)}
    closed = ClosedPartial(4, groups, {keys[0]: 7, keys[1]: 19, keys[2]: 12}, complete=True)
    sent = asyncio.run(guard.partials("telemetry:2", closed, cut_at=25))
    partials = {p.group.version: p for p in (Partial.from_dict(v) for _, v in sent)}
    assert set(partials) == {"v1", OTHER}
    assert (partials["v1"].cut_at, partials["v1"].last) == (25, 7)
    assert (partials[OTHER].cut_at, partials[OTHER].last) == (25, 19)
    assert partials[OTHER].aggregate.request_count == 28 + 29


def _junk_and_canary() -> dict[GroupKey, WindowAggregate]:
    groups = {
        GroupKey("intent", f"junk{i}", "eu"): agg_of(f"j{i}", version=f"junk{i}", requests=500)
        for i in range(10)
    }
    groups[GroupKey("intent", "v1", "eu")] = agg_of("s", version="v1", requests=400)
    groups[GroupKey("intent", "canary", "eu")] = agg_of("c", version="canary", requests=3)
    return groups


def test_a_light_canary_after_ten_busier_versions_keeps_its_row_when_the_control_plane_knows_it():
    groups = _junk_and_canary()
    unknown = bound_groups(groups, StateLimits())
    assert {k.version for k in unknown.kept} == {f"junk{i}" for i in range(10)} | {OTHER}
    out = bound_groups(groups, StateLimits(), protected={"intent": {"v1", "canary"}})
    versions = {k.version for k in out.kept}
    assert {"v1", "canary", OTHER} <= versions
    # Protected versions take their places first: eight of the ten others stay.
    assert len(versions - {OTHER}) == 10
    assert out.kept[GroupKey("intent", "canary", "eu")].request_count == 3
    assert merge_all(list(out.kept.values())).request_count == 10 * 500 + 400 + 3


def test_a_registered_model_past_the_model_cap_is_kept_and_a_busier_unknown_one_refused():
    groups = {
        GroupKey(f"junk{i}", "v1", "eu"): agg_of(f"j{i}", model=f"junk{i}", requests=99)
        for i in range(3)
    }
    groups[GroupKey("intent", "v1", "eu")] = agg_of("d", requests=1)
    limits = StateLimits(max_models=3)
    assert GroupKey("intent", "v1", "eu") in {r.group for r in bound_groups(groups, limits).refused}
    out = bound_groups(groups, limits, protected={"intent": set()})
    assert GroupKey("intent", "v1", "eu") in out.kept
    assert len({k.model_id for k in out.kept}) == 3
    assert [r.error.limit for r in out.refused] == ["max_models"]


def test_protected_groups_take_the_windows_places_before_busier_ones():
    groups = _junk_and_canary()
    out = bound_groups(
        groups, StateLimits(max_groups_per_window=2), protected={"intent": {"canary"}}
    )
    assert GroupKey("intent", "canary", "eu") in out.kept
    assert len(out.kept) == 2


def test_stage_2_keeps_a_protected_version_new_to_a_full_window():
    from streams.control.limits import merge_target

    limits = StateLimits(max_versions_per_model=2)
    open_groups = [GroupKey("intent", v, "eu").encode() for v in ("a", "b")]
    canary = GroupKey("intent", "canary", "eu")
    assert merge_target(open_groups, canary, limits).version == OTHER
    assert merge_target(open_groups, canary, limits, protected={"intent": {"canary"}}) == canary
    other_model = {"third": {"canary"}}
    assert merge_target(open_groups, canary, limits, protected=other_model).version == OTHER


def test_known_names_protect_versions_and_a_model_without_a_version():
    from streams.control.limits import known_names

    names = known_names([("intent", "v1"), ("intent", "v2"), ("ner", None), ("intent", None)])
    assert names == {"intent": {"v1", "v2"}, "ner": set()}


def test_the_guard_asks_for_known_names_at_every_close():
    import asyncio

    from streams.control.dead_letters import DeadLetters
    from streams.control.guard import WriteGuard
    from streams.control.windows import ClosedPartial

    known: dict[str, set[str]] = {}
    metrics = ControlMetrics()
    guard = WriteGuard(
        StateLimits(),
        internal_topic="app-partials",
        metrics=metrics,
        dead_letters=DeadLetters(None, "w1", metrics),
        known=lambda: known,
    )
    closed = ClosedPartial(1, _junk_and_canary(), {}, complete=True)

    def versions() -> set[str]:
        sent = asyncio.run(guard.partials("telemetry:0", closed, cut_at=1))
        return {Partial.from_dict(v).group.version for _, v in sent}

    assert "canary" not in versions()
    known["intent"] = {"canary"}
    assert "canary" in versions()
