"""Tiny causal LMs built with a KV cache by onnxruntime-genai's model builder, for fast tests.

The builder writes the same files for a 2-layer Llama as for SmolLM2, so the device's genai
path is exercised for real in seconds. torch and transformers are imported when called.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from streams.events.artifact import Manifest, file_entries

if TYPE_CHECKING:
    from transformers import BertTokenizerFast, LlamaForCausalLM  # type: ignore[attr-defined]

# Only words of the tiny vocabulary: the system message is left out, each turn ends in [SEP].
CHAT_TEMPLATE = (
    "{% for m in messages %}{% if m['role'] != 'system' %}{{ m['content'] }} [SEP] "
    "{% endif %}{% endfor %}"
)


def build(
    model: LlamaForCausalLM,
    tokenizer: BertTokenizerFast,
    root: Path,
    *,
    precision: str = "fp32",
    chat_template: str | None = CHAT_TEMPLATE,
) -> Path:
    """Save the model, run the builder (``-e cpu``), return the flat build directory."""
    hf_dir, out = root / "hf", root / f"genai-{precision}"
    model.save_pretrained(str(hf_dir))
    tokenizer.save_pretrained(str(hf_dir))
    subprocess.run(
        [
            sys.executable,
            "-m",
            "onnxruntime_genai.models.builder",
            "-i",
            str(hf_dir),
            "-o",
            str(out),
            "-p",
            precision,
            "-e",
            "cpu",
            "-c",
            str(root / "cache"),
        ],
        check=True,
        capture_output=True,
    )
    if chat_template is not None:
        (out / "chat_template.jinja").write_text(chat_template)
    return out


def manifest(directory: Path, *, version: str = "v1", max_length: int = 128) -> Manifest:
    """The manifest a package of ``directory`` states (unsigned: tests load it directly)."""
    names = [p.name for p in directory.iterdir() if p.is_file()]
    return Manifest(
        model_id="slm",
        version=version,
        task="GENERATE",
        engine="onnxruntime-genai",
        tokenizer_file="tokenizer.json",
        max_length=max_length,
        files=file_entries(directory, names),
    )
