"""Tiny transformers models built in-process from a config over the intents' words.

A 2-layer, width-64 BERT classifier or Llama exports, quantizes and evaluates in seconds, so
the optimizer's passes and the edge runtime's decoding are tested on real graphs without
loading pretrained weights. Weights come from ``torch.manual_seed(seed)``: the same call gives
the same model. torch and transformers (the ``optimize`` extra) are imported when called.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from optimizers import intents
from optimizers.model import ModelRef, TaskName

if TYPE_CHECKING:
    from transformers import (  # type: ignore[attr-defined]  # see intent_tokenizer
        BertTokenizerFast,
        LlamaForCausalLM,
        PreTrainedModel,
    )

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
"""The first token ids of every tiny tokenizer: padding 0, ``[CLS]`` 2, ``[SEP]`` 3."""


def intent_tokenizer(words: Sequence[str]) -> BertTokenizerFast:
    """A lower-casing word-piece tokenizer whose vocabulary is ``words`` in order."""
    # transformers 5 keeps BertTokenizerFast as an alias of BertTokenizer, outside its typed
    # exports; transformers 4 (still allowed by the optimize extra) has only the former fast.
    from transformers import BertTokenizerFast  # type: ignore[attr-defined]

    return BertTokenizerFast(vocab={w: i for i, w in enumerate(words)}, do_lower_case=True)


def save(
    model: PreTrainedModel,
    tokenizer: BertTokenizerFast,
    path: Path,
    *,
    task: TaskName,
    max_length: int,
    labels: Sequence[str] = (),
) -> ModelRef:
    """Write model and tokenizer as a transformers directory the passes read."""
    model.save_pretrained(str(path))
    tokenizer.save_pretrained(str(path))
    ref = ModelRef(path=path, format="hf", task=task, labels=tuple(labels), max_length=max_length)
    ref.save_meta()
    return ref


def tiny_bert(
    path: Path,
    *,
    layers: int = 2,
    hidden: int = 64,
    seed: int = 0,
    labels: Sequence[str] = intents.INTENTS,
) -> ModelRef:
    """A random BERT sequence classifier over ``labels``, saved at ``path``."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(seed)
    words = [*SPECIALS, *intents.vocabulary()]
    tokenizer = intent_tokenizer(words)
    config = BertConfig(
        vocab_size=len(words),
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        intermediate_size=hidden * 2,
        max_position_embeddings=64,
        id2label=dict(enumerate(labels)),  # which sets num_labels
        label2id={label: i for i, label in enumerate(labels)},
        pad_token_id=0,
        bos_token_id=2,
        eos_token_id=3,
    )
    model = BertForSequenceClassification(config).eval()
    return save(model, tokenizer, path, task="classify", labels=labels, max_length=32)


def tiny_llama(
    *, seed: int = 0, eos: str | None = None
) -> tuple[LlamaForCausalLM, BertTokenizerFast]:
    """A random Llama and its tokenizer, not yet saved (a test may adjust weights first).

    ``eos`` adds an end-of-sequence token right after :data:`SPECIALS` (id 5) and makes it the
    model's; without it ``[SEP]`` (id 3) ends a sequence.
    """
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    words = [*SPECIALS, *([eos] if eos else []), *intents.vocabulary()]
    tokenizer = intent_tokenizer(words)
    if eos:
        tokenizer.add_special_tokens({"eos_token": eos})
    config = LlamaConfig(
        vocab_size=len(words),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        bos_token_id=2,
        eos_token_id=words.index(eos or "[SEP]"),
        pad_token_id=0,
    )
    return LlamaForCausalLM(config).eval(), tokenizer
