"""``build_causal``: a causal LM to an onnxruntime-genai build with a KV cache.

onnxruntime-genai's model builder writes the graph devices run fastest here (fused
GroupQueryAttention, rotary embeddings, past/present key-value tensors, weights in
``model.onnx.data``) and quantizes weight-only (``MatMulNBits``): activations stay float, so
int8 keeps fp32's perplexity (+0.0% on SmolLM2-135M) where dynamic int8 of the activations
cost +59%. The output directory is flat: model.onnx, model.onnx.data, genai_config.json,
tokenizer.json, tokenizer_config.json, chat_template.jinja (if the model has one).

Options:

- ``precision``: fp32 | int8 (``bits=8``) | int4 (``bits=4``).
- ``algorithm``: ``rtn`` and ``k_quant`` are the builder's own (``algo_config``); ``hqq``
  builds fp32 and then applies onnxruntime's ``HQQWeightOnlyQuantConfig`` (half-quadratic
  optimisation of each block's scale and zero point; no data needed; int4 only, because
  onnxruntime's CPU kernel takes float zero points at 4 bits only).
- ``block_size``: weights per scale (16..256): smaller blocks, closer weights, larger files.
  ``k_quant`` needs an even number of blocks along every weight's input (checked up front).
- ``lm_head``: ``same`` quantizes it like the body; ``int8`` keeps it at 8 bits
  (``matmul_mixed_precision=last_matmul:int8``); ``fp32`` leaves it float. A model whose
  embeddings are tied to the LM head (SmolLM2) shares one table with the builder's
  algorithms: ``same``/``int8`` quantize the table the embedding lookup reads too, ``fp32``
  unties them (the file grows by a float table). ``hqq`` never quantizes the embedding lookup.
- ``lora_targets``: projections (``q_proj``, ``v_proj``, ...) that get LoRA weights as graph
  inputs, zero by default (:mod:`optimizers.lora_graph`): the LoRA-ready base that
  ``export_adapter`` writes adapters for. Empty (the default): no LoRA inputs.
- ``accuracy_level``: the MatMulNBits compute type (4: int8 activations inside the kernel,
  the builder's CPU default and the fastest; 1: fp32).

The build runs the builder in a child process (it holds the whole torch model and prints a
lot; its output is logged at debug level and its layer count drives ``context.progress``).
Afterwards the graph is loaded in plain onnxruntime and its logits compared with torch on
probe texts (fp32 also greedily, token for token): see :data:`TOLERANCE`.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import Field, field_validator, model_validator

from optimizers.causal_graph import GENAI_CONFIG, CausalGraph
from optimizers.errors import ExportMismatchError, PassError
from optimizers.lora_graph import add_lora_inputs, check_targets
from optimizers.model import ONNX_FILE, TOKENIZER_FILE, Format, ModelRef
from optimizers.passes.base import Pass, PassConfig

log = logging.getLogger(__name__)

ENGINE = "onnxruntime-genai"
CausalPrecision = Literal["fp32", "int8", "int4"]

TOLERANCE: dict[str, float] = {"fp32": 1e-3, "int8": 0.1, "int4": 0.75}
"""Default bound on max |onnxruntime logit - torch logit| over the probes, relative to
max(1, max |torch logit|). fp32 differs from torch only by kernel order (measured 2e-7 of
the scale on the tiny Llama, 2e-6 on SmolLM2-135M); the quantized bounds are sanity checks
that catch a broken graph (diffs far beyond the scale), not quality judgements, which are
perplexity's (evaluate, the precision budget). Measured on SmolLM2-135M, whose logits reach
30: int8 0.04-0.05, int4 0.47-0.60 of the scale at the worst position of the probes."""

_PROBES = (
    "The capital of France is",
    "turn off the lights in the kitchen and then",
    "hi",
)
_LAYER = re.compile(r"Reading layer (\d+)")
_LM_HEAD_NODE = "/lm_head/MatMul"
_BUILDER_CPU_ACCURACY = 4


class BuildCausalConfig(PassConfig):
    precision: CausalPrecision = "fp32"
    algorithm: Literal["rtn", "k_quant", "hqq"] = Field(
        default="k_quant", description="int8/int4 weight quantizer"
    )
    block_size: int = Field(default=32, ge=16, le=256, description="weights per scale")
    lm_head: Literal["same", "int8", "fp32"] = Field(
        default="int8", description="precision of the LM head (and of tied embeddings)"
    )
    accuracy_level: Literal[1, 2, 3, 4] | None = Field(
        default=None, description="MatMulNBits compute type; default the builder's (4 on CPU)"
    )
    symmetric: bool = Field(default=True, description="no zero points (int4/uint4 otherwise)")
    context_length: int | None = Field(
        default=None, ge=8, description="tokens a device may use; default the model's context"
    )
    tolerance: float | None = Field(
        default=None, gt=0, description="logit check bound; default TOLERANCE[precision]"
    )
    lora_targets: tuple[str, ...] = Field(
        default=(), description="projections that take LoRA weights as inputs (LoRA-ready base)"
    )
    probe_count: int = Field(default=8, ge=0, description="held-out texts added to the probes")
    probe_tokens: int = Field(default=6, ge=1, description="fp32: greedy tokens compared")

    @model_validator(mode="after")
    def _hqq_is_4_bit(self) -> BuildCausalConfig:
        if self.algorithm == "hqq" and self.precision == "int8":
            # HQQ's zero points are float; onnxruntime's CPU MatMulNBits takes those at 4 bits only.
            raise ValueError("hqq builds int4 only; int8 uses rtn or k_quant")
        return self

    @field_validator("lora_targets")
    @classmethod
    def _known_targets(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return check_targets(value) if value else ()

    @field_validator("block_size")
    @classmethod
    def _power_of_two(cls, value: int) -> int:
        if value & (value - 1):
            raise ValueError("block_size must be a power of two (16, 32, 64, 128, 256)")
        return value


class BuildCausal(Pass[BuildCausalConfig]):
    name: ClassVar[str] = "build_causal"
    accepts: ClassVar[frozenset[Format]] = frozenset({"hf"})
    produces: ClassVar[Format | None] = "onnx"
    Config = BuildCausalConfig

    def run(self, model: ModelRef, out_dir: Path) -> ModelRef:
        self.check_input(model)
        if model.task != "generate":
            raise PassError(self.name, f"builds causal LMs, got task {model.task!r}")
        cfg = self.config
        if cfg.algorithm == "k_quant" and cfg.precision != "fp32":
            _check_k_quant_blocks(model.path, cfg.block_size)
        out_dir.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        builder_precision = "fp32" if cfg.algorithm == "hqq" else cfg.precision
        self._builder(model.path, out_dir, builder_precision, self._extra_options())
        if cfg.algorithm == "hqq" and cfg.precision != "fp32":
            self._hqq(out_dir / ONNX_FILE)
        if cfg.lora_targets:
            add_lora_inputs(out_dir / ONNX_FILE, cfg.lora_targets)
        context = _set_context(out_dir / GENAI_CONFIG, cfg.context_length)
        shutil.rmtree(out_dir / "cache", ignore_errors=True)
        step = f"{self.name}:{cfg.precision}"
        if cfg.precision != "fp32":
            step += f":{cfg.algorithm}:b{cfg.block_size}:head-{cfg.lm_head}"
        if cfg.lora_targets:
            step += ":lora-inputs-" + "+".join(cfg.lora_targets)
        out = model.derive(
            path=out_dir,
            format="onnx",
            engine=ENGINE,
            precision=cfg.precision,
            max_length=context,
            step=step,
        )
        out.save_meta()
        log.info(
            "built model=%s %s in %.1fs, %d bytes",
            model.path,
            step,
            time.monotonic() - started,
            sum(f.stat().st_size for f in out_dir.iterdir() if f.is_file()),
        )
        self._compare(model, out)
        return out

    def _extra_options(self) -> list[str]:
        cfg = self.config
        options = ["hf_token=false"]
        if cfg.precision == "fp32" or cfg.algorithm == "hqq":
            return options
        options += [
            f"algo_config={cfg.algorithm}",
            f"block_size={cfg.block_size}",
            f"is_symmetric={str(cfg.symmetric).lower()}",
        ]
        if cfg.accuracy_level is not None:
            options.append(f"accuracy_level={cfg.accuracy_level}")
        if cfg.lm_head == "int8" and cfg.precision == "int4":
            options.append("matmul_mixed_precision=last_matmul:int8")
        elif cfg.lm_head == "fp32":
            options += [f"nodes_to_exclude={_LM_HEAD_NODE}", "shared_embeddings=false"]
        return options

    def _builder(self, source: Path, out_dir: Path, precision: str, extra: list[str]) -> None:
        command = [
            sys.executable,
            "-m",
            "onnxruntime_genai.models.builder",
            "-i",
            str(source),
            "-o",
            str(out_dir),
            "-p",
            precision,
            "-e",
            "cpu",
            "-c",
            str(out_dir / "cache"),
            "--extra_options",
            *extra,
        ]
        layers = _layer_count(source)
        log.debug("running %s", " ".join(command))
        tail: list[str] = []
        with subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
        ) as proc:
            assert proc.stdout is not None  # stdout=PIPE above
            for line in proc.stdout:
                log.debug("builder: %s", line.rstrip())
                tail = [*tail[-19:], line.rstrip()]
                if found := _LAYER.search(line):
                    self.context.progress("build", int(found.group(1)) + 1, layers)
            code = proc.wait()
        if code != 0 or not (out_dir / ONNX_FILE).exists():
            raise PassError(
                self.name,
                f"model builder exited {code}: " + " | ".join(tail[-5:]),
                model=str(source),
            )

    def _hqq(self, graph: Path) -> None:
        """Quantize the fp32 build's MatMuls with HQQ, in place (weights stay external)."""
        import onnx
        from onnxruntime.quantization.matmul_nbits_quantizer import (
            DefaultWeightOnlyQuantConfig,
            HQQWeightOnlyQuantConfig,
            MatMulNBitsQuantizer,
        )

        cfg = self.config
        bits = 4
        proto = onnx.load(str(graph))  # the quantizer needs the weights themselves
        exclude = [_LM_HEAD_NODE] if cfg.lm_head == "fp32" else []
        quantizer = MatMulNBitsQuantizer(
            proto,
            bits=bits,
            block_size=cfg.block_size,
            nodes_to_exclude=exclude,
            algo_config=HQQWeightOnlyQuantConfig(
                block_size=cfg.block_size, bits=bits, op_types_to_quantize=("MatMul",)
            ),
        )
        if cfg.lm_head == "int8" and bits == 4:
            quantizer.nodes_to_exclude.add(_LM_HEAD_NODE)
        self.context.progress("hqq", 0, 1)
        with np.errstate(divide="ignore", invalid="ignore"), warnings.catch_warnings():
            # HQQ wraps the read-only weight arrays in torch tensors without writing to them;
            # torch's warning about non-writable arrays is noise here.
            warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
            quantizer.process()
        quantized = quantizer.model.model
        if cfg.lm_head == "int8" and bits == 4:
            # onnxruntime's CPU kernel refuses 8-bit weights with HQQ's float zero points:
            # the 8-bit head is rounded to nearest (symmetric), as the builder's would be. By
            # now the head is the only MatMul left with a float weight.
            head = MatMulNBitsQuantizer(
                quantized,
                bits=8,
                block_size=cfg.block_size,
                is_symmetric=True,
                nodes_to_include=[_LM_HEAD_NODE],
                algo_config=DefaultWeightOnlyQuantConfig(
                    block_size=cfg.block_size, is_symmetric=True, bits=8
                ),
            )
            with np.errstate(divide="ignore", invalid="ignore"):
                head.process()
            quantized = head.model.model
        level = cfg.accuracy_level or _BUILDER_CPU_ACCURACY
        for node in quantized.graph.node:
            if node.op_type == "MatMulNBits":
                # HQQ's nodes carry no accuracy_level; give them the builder's so that the
                # algorithms are compared on the same kernel.
                kept = [a for a in node.attribute if a.name != "accuracy_level"]
                del node.attribute[:]
                node.attribute.extend([*kept, onnx.helper.make_attribute("accuracy_level", level)])
        data = graph.with_name(graph.name + ".data")
        data.unlink(missing_ok=True)
        onnx.save_model(
            quantized,
            str(graph),
            save_as_external_data=True,
            all_tensors_to_one_file=True,
            location=data.name,
            size_threshold=1024,
        )
        self.context.progress("hqq", 1, 1)

    def _compare(self, source: ModelRef, out: ModelRef) -> None:
        """Logits of the build vs torch on the probes; fp32 must also decode the same tokens."""
        import torch
        from tokenizers import Tokenizer

        from optimizers import hf

        cfg = self.config
        texts = list(_PROBES)
        if self.context.data is not None and cfg.probe_count:
            texts += [e.text for e in self.context.data.eval[: cfg.probe_count]]
        tok = Tokenizer.from_file(str(out.path / TOKENIZER_FILE))
        torch_model = hf.load_model(source.path, "generate")
        graph = CausalGraph(out.path)
        diff, scale = logit_gap(
            graph,
            torch_model,
            tok,
            texts,
            out.max_length,
            lambda n, total: self.context.progress("check", n, total),
        )
        tolerance = (cfg.tolerance or TOLERANCE[cfg.precision]) * scale
        log.info("build check model=%s max_abs_diff=%.3g tolerance=%.3g", out.path, diff, tolerance)
        if diff > tolerance:
            raise ExportMismatchError(max_abs_diff=diff, tolerance=tolerance, model=str(out.path))
        if cfg.precision != "fp32":
            return
        prompt = tok.encode(_PROBES[0]).ids
        with torch.no_grad():
            prompt_ids = torch.tensor([prompt])
            # No min_new_tokens: it masks the end token out of torch's choices, which the
            # graph's plain argmax does not, so a model that learnt to stop (a merged LoRA)
            # would differ. torch stops at the end token; the graph must agree up to it.
            want_ids = torch_model.generate(  # type: ignore[operator]  # see test_causal
                prompt_ids,
                attention_mask=torch.ones_like(prompt_ids),
                max_new_tokens=cfg.probe_tokens,
                do_sample=False,
            )[0, len(prompt) :].tolist()
        got_ids = graph.greedy(prompt, cfg.probe_tokens)[: len(want_ids)]
        if got_ids != want_ids:
            raise PassError(
                self.name,
                f"greedy tokens differ from torch: {got_ids} != {want_ids}",
                model=str(out.path),
            )


def logit_gap(
    graph: CausalGraph,
    torch_model: Any,
    tokenizer: Any,
    texts: Sequence[str],
    max_length: int,
    progress: Callable[[int, int], None],
) -> tuple[float, float]:
    """``(max |onnxruntime - torch| logit, max(1, max |torch logit|))`` over ``texts``.

    Raises :class:`ExportMismatchError` as soon as the graph gives a non-finite logit.
    """
    import torch

    diff, scale = 0.0, 1.0
    for n, text in enumerate(texts, start=1):
        ids = tokenizer.encode(text).ids[:max_length]
        if not ids:
            continue
        got = graph.logits(ids)
        with torch.no_grad():
            want = torch_model(torch.tensor([ids])).logits[0].float().numpy()
        if not np.all(np.isfinite(got)):
            raise ExportMismatchError(max_abs_diff=float("inf"), tolerance=0.0)
        diff = max(diff, float(np.max(np.abs(got - want))))
        scale = max(scale, float(np.max(np.abs(want))))
        progress(n, len(texts))
    return diff, scale


def _check_k_quant_blocks(source: Path, block_size: int) -> None:
    """Refuse before building what the builder's k_quant would crash on after a minute.

    It packs two 4-bit zero points per byte along the input dimension, and fails when a
    weight has an odd number of blocks there (SmolLM2's 576-wide hidden state at 64 or 128).
    """
    try:
        config = json.loads((source / "config.json").read_text())
    except (OSError, ValueError):
        return
    for key in ("hidden_size", "intermediate_size"):
        width = config.get(key)
        if isinstance(width, int) and -(-width // block_size) % 2:
            raise PassError(
                "build_causal",
                f"k_quant needs an even number of blocks per row: {key}={width} makes "
                f"{-(-width // block_size)} blocks of {block_size}; use a smaller block_size, "
                "rtn or hqq",
                model=str(source),
            )


def _layer_count(source: Path) -> int:
    try:
        config = json.loads((source / "config.json").read_text())
        return int(config.get("num_hidden_layers", 0)) or 1
    except (OSError, ValueError):
        return 1


def _set_context(path: Path, context_length: int | None) -> int:
    """The context devices may use, written consistently into genai_config.json."""
    config = json.loads(path.read_text())
    native = int(config["model"]["context_length"])
    length = native if context_length is None else min(context_length, native)
    config["model"]["context_length"] = length
    config["search"]["max_length"] = length
    path.write_text(json.dumps(config, indent=4))
    return length
