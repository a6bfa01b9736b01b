from __future__ import annotations

import asyncio

import numpy as np
import pytest

from edge_runtime.errors import NoModelError, WarmUpError
from edge_runtime.hardware import PROFILES
from edge_runtime.model_slot import ModelSlot, prepare
from tests.support.tiny_models import LABELS, build, unpacked

PROFILE = PROFILES["cpu-small"]
TEXTS = ["book a flight to paris", "play some music please"]


def _feed(model, texts):
    encodings = model._tokenizer.encode_batch(texts)
    return {
        "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
        "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
    }


def _install(slot, root, built):
    return slot.install(unpacked(root, built), built.manifest, PROFILE)


def test_classify_returns_label_confidence_and_version(tmp_path, signing_key):
    built = build(tmp_path, signing_key, version="v1", favour=2)
    model = prepare(unpacked(tmp_path, built), built.manifest, PROFILE)
    result = model.run(TEXTS)
    assert result.version == "v1"
    assert [p.label for p in result.predictions] == [LABELS[2], LABELS[2]]
    assert all(0.99 < (p.confidence or 0) <= 1.0 for p in result.predictions)
    assert result.token_counts == (5, 4)
    assert result.features.shape == (2, 8)


def test_classify_takes_the_graphs_own_argmax_and_score(tmp_path, signing_key):
    built = build(tmp_path, signing_key, seed=3)
    model = prepare(unpacked(tmp_path, built), built.manifest, PROFILE)
    texts = [*TEXTS, "zzz qqq", "paris " * 100, "what is the weather"]
    result = model.run(texts)
    session = model.session
    assert session is not None
    session_out = session.run(None, _feed(model, texts))[0]
    best = session_out.argmax(axis=1)
    assert result.class_indices == tuple(int(i) for i in best)
    assert [p.label for p in result.predictions] == [LABELS[i] for i in best]
    assert [p.confidence for p in result.predictions] == [
        float(session_out[i, b]) for i, b in enumerate(best)
    ]


def test_equal_class_scores_go_to_the_first_class_as_argmax_does(tmp_path, signing_key):
    built = build(tmp_path, signing_key)
    model = prepare(unpacked(tmp_path, built), built.manifest, PROFILE)
    even = np.full((2, len(LABELS)), 1.0 / len(LABELS), dtype=np.float32)
    even[1, 2:] = 0.5
    even[1, :2] = 0.0
    result = model._classify(even, [even], (1, 1))
    assert result.class_indices == (0, 2)
    assert [p.confidence for p in result.predictions] == [0.25, 0.5]


def test_embed_returns_unit_vectors(tmp_path, signing_key):
    built = build(tmp_path, signing_key, task="EMBED")
    model = prepare(unpacked(tmp_path, built), built.manifest, PROFILE)
    result = model.run(TEXTS)
    vectors = np.array([p.embedding for p in result.predictions])
    assert vectors.shape == (2, 8)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
    assert not np.allclose(vectors[0], vectors[1])


def test_unknown_words_and_truncation_are_served(tmp_path, signing_key):
    built = build(tmp_path, signing_key)
    model = prepare(unpacked(tmp_path, built), built.manifest, PROFILE)
    result = model.run(["zzz qqq", "paris " * 100])
    assert result.token_counts == (2, 16)


def test_request_before_any_install_is_refused():
    with pytest.raises(NoModelError):
        ModelSlot("intent").infer(TEXTS)


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({"nan": True}, "non-finite"),
        ({"n_out": 3}, "3 classes, the manifest lists 4"),
        ({"task": "GENERATE", "out_of_vocab": True}, "outside the tokenizer's vocabulary"),
    ],
)
def test_failed_warm_up_keeps_old_model(tmp_path, signing_key, kwargs, reason):
    slot = ModelSlot("intent")
    good = build(tmp_path, signing_key, version="v1", favour=1)
    bad = build(tmp_path, signing_key, version="v2", **kwargs)

    async def scenario():
        await _install(slot, tmp_path, good)
        with pytest.raises(WarmUpError) as info:
            await _install(slot, tmp_path, bad)
        return info.value

    error = asyncio.run(scenario())
    assert reason in error.reason
    assert error.version == "v2"
    result = slot.infer(TEXTS)
    assert result.version == "v1"
    assert result.predictions[0].label == LABELS[1]


def test_hot_swap_under_load_drops_nothing_and_tags_every_response(tmp_path, signing_key):
    """Each version favours a different class, so a response proves which session computed it."""
    versions = [f"v{i}" for i in range(1, 6)]
    favour = {v: i % len(LABELS) for i, v in enumerate(versions)}
    builds = [build(tmp_path, signing_key, version=v, favour=favour[v]) for v in versions]
    slot = ModelSlot("intent")
    clients = 8
    seen: list[list[str]] = [[] for _ in range(clients)]
    failures: list[BaseException] = []
    replaced = []

    async def client(i: int, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                result = await slot.ainfer(TEXTS)
            except Exception as exc:  # the assertion below reports it
                failures.append(exc)
                continue
            expected = LABELS[favour[result.version]]
            assert all(p.label == expected for p in result.predictions), result
            seen[i].append(result.version)

    async def scenario():
        await _install(slot, tmp_path, builds[0])
        stop = asyncio.Event()
        tasks = [asyncio.create_task(client(i, stop)) for i in range(clients)]
        for built in builds[1:]:
            await asyncio.sleep(0.05)
            before = slot.current
            await _install(slot, tmp_path, built)
            replaced.append(before)
        await asyncio.sleep(0.05)
        stop.set()
        await asyncio.gather(*tasks)

    asyncio.run(scenario())
    assert failures == []
    order = {v: i for i, v in enumerate(versions)}
    for history in seen:
        assert history, "every client was served"
        indices = [order[v] for v in history]
        assert indices == sorted(indices), "versions never go backwards for a client"
    served = {v for h in seen for v in h}
    assert len(served) >= 3
    assert versions[-1] in served
    assert slot.swaps == len(versions)
    assert all(m is not None and m.in_flight == 0 and m.acquire() is False for m in replaced)


def test_a_new_version_with_the_same_tokenizer_file_reuses_the_loaded_tokenizer(
    tmp_path, signing_key
):
    # Parsing tokenizer.json holds the GIL and stalls serving during a swap.
    v1 = build(tmp_path, signing_key, version="v1", seed=1)
    v2 = build(tmp_path, signing_key, version="v2", seed=2)
    old = prepare(unpacked(tmp_path, v1), v1.manifest, PROFILE)
    new = prepare(unpacked(tmp_path, v2), v2.manifest, PROFILE)
    assert new._tokenizer is old._tokenizer
    assert new.run(TEXTS).token_counts == old.run(TEXTS).token_counts == (5, 4)
    longer = v2.manifest.model_copy(update={"max_length": 4})
    other = prepare(unpacked(tmp_path, v2), longer, PROFILE)
    assert other._tokenizer is not old._tokenizer  # truncation differs: not shared
    assert other.run(TEXTS).token_counts == (4, 4)


@pytest.mark.parametrize(
    ("cores", "threads", "aside"), [(2, 0, True), (2, 1, False), (8, 0, False), (4, 4, True)]
)
def test_serving_threads_that_fill_the_cores_stand_aside_for_a_load(
    tmp_path, signing_key, monkeypatch, cores, threads, aside
):
    from tests.support.device import settings

    monkeypatch.setattr("os.cpu_count", lambda: cores)
    device = settings(tmp_path, signing_key, serving_threads=threads)
    assert device.serving_fills_cores(PROFILE.intra_op_threads) is aside


@pytest.mark.parametrize("aside", [True, False])
def test_a_load_runs_with_one_serving_thread_aside_only_when_asked(
    tmp_path, signing_key, monkeypatch, aside
):
    from edge_runtime import model_slot as slots
    from edge_runtime.lane import ServingLane

    lane = ServingLane(workers=2, max_batch=8)
    slot = ModelSlot("intent", lane=lane, load_aside=aside)
    seen: list[int] = []
    real = slots.prepare

    def watched(*args, **kwargs):
        seen.append(lane.serving)
        return real(*args, **kwargs)

    monkeypatch.setattr(slots, "prepare", watched)
    built = build(tmp_path, signing_key)
    asyncio.run(_install(slot, tmp_path, built))
    slot.close()
    assert seen == [1 if aside else 2]
    assert lane.serving == 2
