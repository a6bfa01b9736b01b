"""The serving lane: micro-batches, inline service of a lone caller, errors, telemetry."""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from typing import Any

import numpy as np
import pytest

from edge_runtime import lane as lanes
from edge_runtime.errors import InferenceError
from edge_runtime.hardware import PROFILES
from edge_runtime.lane import Request, ServingLane, alike, fits_inline, share, split, take
from edge_runtime.model import InferenceResult, LoadedModel
from edge_runtime.model_slot import prepare
from tests.support.tiny_models import build, unpacked

PROFILE = PROFILES["cpu-small"]
TEXTS = [
    "book a flight to paris",
    "play some music please",
    "cancel my order",
    "where is the package",
    "paris paris paris tomorrow",
    "music",
]


@pytest.fixture
def model(tmp_path, signing_key) -> LoadedModel:
    built = build(tmp_path, signing_key, version="v1")
    return prepare(unpacked(tmp_path, built), built.manifest, PROFILE)


class Gate:
    """Holds the model's first run until opened, so the requests behind it queue up."""

    def __init__(self, model: LoadedModel) -> None:
        self.opened = threading.Event()
        self.entered = threading.Event()
        self.sizes: list[int] = []
        run = model.run

        def gated(texts: Any, **kwargs: Any) -> InferenceResult:
            self.sizes.append(len(texts))
            if len(self.sizes) == 1:
                self.entered.set()
                assert self.opened.wait(30)
            return run(texts, **kwargs)

        model.run = gated  # type: ignore[method-assign]


def _request(model: object, n: int, length: int = 1) -> Request:
    return Request(model, ["t" * length] * n, None, None, 0.0, length)  # type: ignore[arg-type]


def test_a_thread_takes_its_share_beside_the_idle_threads():
    assert share(4, idle=0, max_batch=32) == 4  # every other thread busy: the whole queue
    assert share(4, idle=1, max_batch=32) == 2
    assert share(5, idle=1, max_batch=32) == 3
    assert share(1000, idle=0, max_batch=32) == 32
    assert share(1, idle=3, max_batch=32) == 1


def test_only_a_request_expected_to_be_short_runs_inline():
    assert fits_inline(0.001, 1, limit_s=0.003)
    assert not fits_inline(0.001, 4, limit_s=0.003)  # four texts of a 1 ms model: 4 ms
    assert not fits_inline(None, 1, limit_s=0.003)  # not timed yet on this model


def test_take_stops_at_another_model_and_at_the_limit():
    a, b = object(), object()
    queue = deque([_request(a, 2), _request(a, 1), _request(a, 3), _request(b, 1)])
    assert [len(r.texts) for r in take(queue, 3)] == [2, 1]
    assert [len(r.texts) for r in take(queue, 8)] == [3]  # the next one is another model's
    assert [r.model for r in queue] == [b]
    big = deque([_request(a, 9)])
    assert len(take(big, 3)) == 1  # the head goes whatever its size


def test_only_texts_of_a_similar_length_share_a_run():
    assert alike(20, 20)
    assert alike(20, 33)  # 1.25 x 20 + 8
    assert not alike(20, 34)
    assert not alike(10, 58)  # "play music" and a 14-token question: two runs are cheaper


def test_take_passes_over_other_lengths_and_keeps_their_order():
    a = object()
    queue = deque(_request(a, 1, n) for n in (20, 100, 22, 5, 24, 21))
    assert [r.length for r in take(queue, 3)] == [20, 22, 24]
    assert [r.length for r in queue] == [100, 5, 21]
    assert [r.length for r in take(queue, 8)] == [100]
    assert [r.length for r in take(queue, 8)] == [5]
    assert [r.length for r in queue] == [21]


def test_take_looks_only_so_far_behind_the_head(monkeypatch):
    a = object()
    monkeypatch.setattr(lanes, "MERGE_SCAN", 3)
    queue = deque(_request(a, 1, n) for n in (20, 100, 100, 100, 20))
    assert [r.length for r in take(queue, 8)] == [20]
    assert [r.length for r in queue] == [100, 100, 100, 20]


def test_a_batch_grows_only_while_its_longest_and_shortest_stay_alike():
    a = object()
    # Each is alike to the head, but 40 and 25 are too far apart once both are in.
    queue = deque(_request(a, 1, n) for n in (32, 40, 25))
    assert [r.length for r in take(queue, 8)] == [32, 40]
    assert [r.length for r in queue] == [25]


def test_split_gives_each_request_its_own_rows(model):
    whole = model.run(TEXTS[:5])
    parts = split(whole, [2, 1, 2])
    assert [len(p.predictions) for p in parts] == [2, 1, 2]
    assert parts[2].token_counts == whole.token_counts[3:5]
    np.testing.assert_array_equal(parts[1].features, whole.features[2:3])
    assert all(p.version == "v1" for p in parts)


def test_queued_requests_run_in_batches_and_answer_as_if_alone(model):
    alone = [model.run([t]) for t in TEXTS]
    gate = Gate(model)
    lane = ServingLane(workers=1, max_batch=8)

    async def scenario() -> list[InferenceResult]:
        model.acquire()
        first = asyncio.create_task(lane.run(model, [TEXTS[0]]))
        assert await asyncio.to_thread(gate.entered.wait, 30)
        rest = []
        for text in TEXTS[1:]:
            model.acquire()
            rest.append(asyncio.create_task(lane.run(model, [text])))
        await asyncio.sleep(0)  # all five are queued behind the held run
        gate.opened.set()
        return [await first, *[await r for r in rest]]

    results = asyncio.run(scenario())
    lane.close()
    assert gate.sizes[0] == 1
    assert len(gate.sizes) < len(TEXTS)
    assert sum(gate.sizes) == len(TEXTS)
    for got, want in zip(results, alone, strict=True):
        assert got.predictions[0].label == want.predictions[0].label
        np.testing.assert_allclose(got.features, want.features, rtol=1e-5, atol=1e-6)
        assert got.token_counts == want.token_counts
    assert model.in_flight == 0


def test_a_lone_caller_is_served_inline_and_concurrent_callers_by_the_threads(model):
    lane = ServingLane(workers=2, max_batch=8, inline_s=10.0)

    async def one() -> InferenceResult:
        model.acquire()
        return await lane.run(model, [TEXTS[0]])

    async def scenario() -> tuple[int, int]:
        await one()  # the first run is timed on a thread
        for _ in range(3):
            await one()
        inline = lane.inline
        await asyncio.gather(*(one() for _ in range(4)))
        return inline, lane.inline

    inline, after = asyncio.run(scenario())
    lane.close()
    assert lane.requests >= 1 + 4 - (after - inline)
    assert inline == 3
    assert after - inline < 4  # concurrent callers went to the threads
    assert model.in_flight == 0


def test_a_thread_is_counted_idle_before_its_callers_are_answered(model):
    """A caller answered by a thread and calling again alone must find the lane idle; were
    the thread still counted busy, a loaded machine would send every lone call to a thread."""
    lane = ServingLane(workers=1, max_batch=8, inline_s=10.0)
    busy_when_answered: list[int] = []

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        schedule = loop.call_soon_threadsafe

        def watched(callback: Any, *args: Any, **kwargs: Any) -> Any:
            if callback is lanes._answer:
                busy_when_answered.append(lane._running)
            return schedule(callback, *args, **kwargs)

        loop.call_soon_threadsafe = watched  # type: ignore[method-assign,assignment]
        for _ in range(2):
            model.acquire()
            await lane.run(model, [TEXTS[0]])

    asyncio.run(scenario())
    lane.close()
    assert busy_when_answered == [0]  # the first run went to the thread; the second ran inline
    assert lane.inline == 1


def test_callers_seen_together_keep_the_next_lone_one_off_the_loop_for_a_while(model, monkeypatch):
    lane = ServingLane(workers=2, max_batch=8, inline_s=10.0)

    async def one() -> InferenceResult:
        model.acquire()
        return await lane.run(model, [TEXTS[0]])

    async def scenario() -> list[int]:
        inline = []
        await one()  # timed on a thread
        await one()
        inline.append(lane.inline)  # alone: inline
        monkeypatch.setattr(lanes, "TOGETHER_HOLD_S", 60.0)
        await asyncio.gather(one(), one())
        await one()
        inline.append(lane.inline)  # alone, but right after two came together: a thread
        monkeypatch.setattr(lanes, "TOGETHER_HOLD_S", 0.0)
        await asyncio.gather(one(), one())
        await one()
        inline.append(lane.inline)  # the hold is over
        return inline

    inline = asyncio.run(scenario())
    lane.close()
    assert inline == [1, 1, 2]


def test_a_thread_stands_aside_while_a_model_loads_and_comes_back_after(model):
    lane = ServingLane(workers=2, max_batch=1)
    events: list[str] = []
    second_entered = threading.Event()
    run = model.run

    def recorded(texts: Any, **kwargs: Any) -> InferenceResult:
        events.append(f"enter {texts[0]}")
        if texts[0] == "a":
            # Holds the first run until the second one enters, or for as long as a second
            # thread would need to start it: it must not enter while a thread stands aside.
            second_entered.wait(0.5)
        else:
            second_entered.set()
        result: InferenceResult = run(texts, **kwargs)
        events.append(f"exit {texts[0]}")
        return result

    model.run = recorded

    async def burst() -> None:
        for _ in range(2):
            model.acquire()
        await asyncio.gather(lane.run(model, ["a"]), lane.run(model, ["b"]))

    async def scenario() -> None:
        with lane.stand_aside():
            await burst()
        aside = list(events)
        events.clear()
        second_entered.clear()
        await burst()
        assert aside == ["enter a", "exit a", "enter b", "exit b"]
        assert events[:2] == ["enter a", "enter b"]  # both threads serve again

    asyncio.run(scenario())
    lane.close()


def test_a_slow_model_is_never_run_on_the_event_loop(model):
    lane = ServingLane(workers=1, max_batch=8, inline_s=0.0)

    async def scenario() -> None:
        for _ in range(3):
            model.acquire()
            await lane.run(model, [TEXTS[0]])

    asyncio.run(scenario())
    lane.close()
    assert (lane.inline, lane.requests) == (0, 3)


def test_a_failed_run_answers_every_caller_of_the_batch_and_frees_the_leases(model):
    served: list[object] = []
    gate = Gate(model)
    original = gate.sizes

    def failing(texts: Any, **kwargs: Any) -> InferenceResult:
        original.append(len(texts))
        if len(original) == 1:
            gate.entered.set()
            assert gate.opened.wait(30)
        raise InferenceError("intent", "v1", "the graph failed")

    model.run = failing
    lane = ServingLane(workers=1, max_batch=8, served=lambda m, o, ms: served.append(o))

    async def scenario() -> list[BaseException | InferenceResult]:
        tasks = []
        for text in TEXTS[:4]:
            model.acquire()
            tasks.append(asyncio.create_task(lane.run(model, [text])))
            if len(tasks) == 1:
                assert await asyncio.to_thread(gate.entered.wait, 30)
        gate.opened.set()
        return await asyncio.gather(*tasks, return_exceptions=True)

    outcomes = asyncio.run(scenario())
    lane.flush()
    lane.close()
    assert all(isinstance(o, InferenceError) and "graph failed" in str(o) for o in outcomes)
    assert len(served) == 4
    assert all(isinstance(o, InferenceError) for o in served)
    assert model.in_flight == 0


def test_a_caller_that_gives_up_does_not_disturb_the_others(model):
    gate = Gate(model)
    lane = ServingLane(workers=1, max_batch=8)

    async def scenario() -> tuple[bool, list[str | None]]:
        tasks = []
        for text in TEXTS[:3]:
            model.acquire()
            tasks.append(asyncio.create_task(lane.run(model, [text])))
            if len(tasks) == 1:
                assert await asyncio.to_thread(gate.entered.wait, 30)
        await asyncio.sleep(0)
        tasks[1].cancel()
        gate.opened.set()
        done = await asyncio.gather(tasks[0], tasks[2])
        return tasks[1].cancelled(), [r.predictions[0].label for r in done]

    cancelled, labels = asyncio.run(scenario())
    lane.close()
    assert cancelled
    assert all(labels)
    assert model.in_flight == 0


@pytest.fixture
def split_fails_once(monkeypatch):
    """The lane's first split raises, as a bug inside a serving thread would."""
    real_split = lanes.split
    calls = {"n": 0}

    def broken_once(result: InferenceResult, sizes: Any) -> list[InferenceResult]:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("a bug")
        return real_split(result, sizes)

    monkeypatch.setattr(lanes, "split", broken_once)


@pytest.mark.usefixtures("split_fails_once")
def test_a_fault_in_the_lane_is_answered_reported_and_survived(model):
    lane = ServingLane(workers=1, max_batch=8)

    async def one() -> InferenceResult:
        model.acquire()
        return await lane.run(model, [TEXTS[0]])

    async def scenario() -> tuple[BaseException | None, InferenceResult]:
        try:
            await one()
        except InferenceError as exc:
            first: BaseException | None = exc
        else:
            first = None
        return first, await one()

    first, second = asyncio.run(scenario())
    assert isinstance(first, InferenceError)
    assert "internal error" in str(first)
    assert second.predictions[0].label
    assert lane.failures == 1
    assert "1 unexpected failures" in (lane.health(failures_seen=0) or "")
    assert lane.health(failures_seen=1) is None
    lane.close()


def test_answered_requests_are_counted_off_the_request_path_and_all_by_flush(model):
    seen: list[tuple[str, float]] = []
    lane = ServingLane(workers=2, max_batch=8, served=lambda m, o, ms: seen.append((o.version, ms)))

    async def scenario() -> None:
        for text in TEXTS:
            model.acquire()
            await lane.run(model, [text])

    asyncio.run(scenario())
    lane.flush()
    assert len(seen) == len(TEXTS)
    assert all(v == "v1" and ms > 0 for v, ms in seen)
    lane.close()
    assert lane.alive == 0


def test_a_closed_lane_refuses_and_releases_the_lease(model):
    lane = ServingLane(workers=1, max_batch=8)
    lane.close()
    model.acquire()
    with pytest.raises(InferenceError, match="closed"):
        asyncio.run(lane.run(model, [TEXTS[0]]))
    assert model.in_flight == 0


@pytest.mark.usefixtures("split_fails_once")
def test_the_device_reports_a_fault_in_its_serving_threads_for_one_window(tmp_path, signing_key):
    from edge_runtime.runtime import EdgeRuntime
    from tests.support.device import registered, settings

    built = build(tmp_path, signing_key, version="v1")

    async def scenario() -> tuple[list[str], list[str], str | None]:
        rt = EdgeRuntime(settings(tmp_path, signing_key, inline_max_ms=0))
        await rt.start_offline()
        await rt.apply(registered(built, 1))
        with pytest.raises(InferenceError, match="internal error"):
            await rt.infer(["book a flight"])
        rt.close_window()
        faulty = list(rt.degraded_reasons)
        served = await rt.infer(["book a flight"])
        rt.close_window()
        await rt.stop()
        return faulty, list(rt.degraded_reasons), served.predictions[0].label

    faulty, after, label = asyncio.run(scenario())
    assert any("serving: 1 unexpected failures" in r for r in faulty)
    assert not any(r.startswith("serving") for r in after)
    assert label
