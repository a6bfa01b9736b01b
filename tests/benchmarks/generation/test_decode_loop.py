"""The plain-onnxruntime decode loop and the benchmark's scoring, on a tiny Llama built from a
config and converted by onnxruntime-genai's model builder (``-e cpu``)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from benchmarks.generation.bench_generation import timings_of
from benchmarks.generation.decode_loop import DecodeLoop
from benchmarks.generation.engines import genai_stream, measure, time_engine
from benchmarks.generation.perplexity import nll, perplexity
from tests.support import tiny_transformers

PROMPT = [2, 17, 40, 9, 33, 120, 7]
NEW = 12


def test_nll_is_log_vocabulary_for_uniform_logits_and_near_zero_when_certain():
    ids = [0, 3, 1, 2]
    assert nll(np.zeros((4, 5), dtype=np.float16), ids) == pytest.approx(np.log(5))
    certain = np.full((4, 5), -50.0)
    certain[np.arange(3), ids[1:]] = 50.0
    assert nll(certain, ids) == pytest.approx(0.0, abs=1e-12)


def test_nll_refuses_logits_of_another_length():
    with pytest.raises(ValueError, match="do not score"):
        nll(np.zeros((3, 5)), [0, 1, 2, 3])


def test_measure_splits_first_token_from_decode():
    timings = measure(iter([5, 6, 7]), load_s=0.5)
    assert timings.tokens == (5, 6, 7)
    assert timings.load_s == 0.5
    assert timings.ttft_s >= 0
    assert timings.decode_s >= 0
    assert measure(iter([]), 0.0).tokens == ()


def test_time_engine_warms_up_then_keeps_the_median_of_the_repeats():
    calls: list[int] = []

    def loader(build_dir: Path):
        assert build_dir == Path("b")

        def stream(ids, n):
            calls.append(n)
            return iter(range(n))

        return stream

    timings = time_engine(loader, Path("b"), [1, 2], 5, repeats=3)
    assert calls == [2, 5, 5, 5]
    assert timings.tokens == (0, 1, 2, 3, 4)
    assert timings.load_s >= 0


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[Path, Path]:
    """(transformers dir, model-builder output) of one tiny random Llama."""
    model, tokenizer = tiny_transformers.tiny_llama()
    hf_dir = tmp_path_factory.mktemp("hf")
    model.save_pretrained(str(hf_dir))
    tokenizer.save_pretrained(str(hf_dir))
    out = tmp_path_factory.mktemp("genai")
    argv = [sys.executable, "-m", "onnxruntime_genai.models.builder", "-i", str(hf_dir)]
    argv += ["-o", str(out), "-p", "fp32", "-e", "cpu", "-c", str(out / "cache")]
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return hf_dir, out


def _torch_greedy(hf_dir: Path, ids: list[int], n: int) -> list[int]:
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(hf_dir)).eval()
    x = torch.tensor([ids])
    with torch.no_grad():
        out = model.generate(
            x, attention_mask=torch.ones_like(x), max_new_tokens=n, do_sample=False
        )
    return [int(t) for t in out[0, len(ids) :]]


def _without_end(tokens: list[int], eos: frozenset[int]) -> list[int]:
    cut = next((i for i, t in enumerate(tokens) if t in eos), len(tokens))
    return tokens[:cut]


def test_decode_loop_gives_the_generators_and_torchs_greedy_tokens(tiny):
    import onnxruntime_genai as og

    hf_dir, build = tiny
    loop = DecodeLoop(build)
    assert loop.spec.share_buffer  # the builder's CPU default, the path the benchmark times
    got = loop.generate(PROMPT, NEW)
    want = list(genai_stream(og.Model(str(build)), PROMPT, NEW))
    assert got == want
    assert len(got) >= 2
    torch_tokens = _torch_greedy(hf_dir, PROMPT, NEW)
    assert _without_end(got, loop.spec.eos) == _without_end(torch_tokens, loop.spec.eos)
    assert loop.generate(PROMPT, NEW) == got  # buffers from one generation do not leak


def test_decode_loop_with_separate_past_and_present_buffers_agrees(tiny, tmp_path):
    _, build = tiny
    copy = tmp_path / "separate"
    shutil.copytree(build, copy, ignore=shutil.ignore_patterns("cache"))
    config = json.loads((copy / "genai_config.json").read_text())
    config["search"]["past_present_share_buffer"] = False
    (copy / "genai_config.json").write_text(json.dumps(config))
    separate = DecodeLoop(copy)
    assert not separate.spec.share_buffer
    assert separate.generate(PROMPT, NEW) == DecodeLoop(build).generate(PROMPT, NEW)


def test_decode_loop_refuses_more_than_the_context(tiny):
    _, build = tiny
    loop = DecodeLoop(build)
    with pytest.raises(ValueError, match="exceed the context"):
        loop.generate(PROMPT, loop.spec.context_length)


def test_perplexity_of_the_cached_graph_with_empty_past_matches_torch(tiny):
    import torch
    from transformers import AutoModelForCausalLM

    hf_dir, build = tiny
    ids = [int(i) for i in np.random.default_rng(0).integers(5, 200, size=40)]
    model = AutoModelForCausalLM.from_pretrained(str(hf_dir)).eval()
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0].numpy()
    assert perplexity(build / "model.onnx", ids) == pytest.approx(
        float(np.exp(nll(logits, ids))), rel=1e-4
    )


def test_a_childs_result_with_extra_fields_reads_back_as_timings():
    result = {"tokens": [4, 5], "ttft_s": 0.1, "decode_s": 0.5, "load_s": 1.0, "vm_hwm_mb": 9.0}
    timings = timings_of(result)
    assert timings.tokens == (4, 5)
    assert timings.decode_tokens_per_s == pytest.approx(2.0)
