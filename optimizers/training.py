"""The small training loop ``finetune`` and ``distill`` share.

Plain torch on CPU: mini-batches of tokenized text, AdamW, one progress report per step.
Deterministic for a given seed, so a re-delivered request builds the same candidate.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Any

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from optimizers import hf
from optimizers.dataset import Example
from optimizers.errors import PassError
from optimizers.passes.base import Progress

LossFn = Callable[[dict[str, torch.Tensor], torch.Tensor], torch.Tensor]
"""``loss(encoded_batch, label_ids) -> scalar``."""


def encoder_layers(model: PreTrainedModel) -> torch.nn.ModuleList:
    """The stack of transformer blocks (BERT-style encoders: ``base_model.encoder.layer``)."""
    encoder = getattr(model.base_model, "encoder", None)
    layers = getattr(encoder, "layer", None)
    if not isinstance(layers, torch.nn.ModuleList):
        raise PassError("training", f"{type(model).__name__} has no encoder.layer stack")
    return layers


def train(
    *,
    name: str,
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    examples: Sequence[Example],
    label_ids: Sequence[int],
    loss_fn: LossFn,
    params: Sequence[torch.nn.Parameter],
    epochs: int,
    batch_size: int,
    lr: float,
    max_length: int,
    seed: int,
    progress: Progress,
    weight_decay: float = 0.01,
) -> float:
    """Train ``params`` of ``model``; return the mean loss of the last epoch."""
    if not examples:
        raise PassError(name, "no training examples")
    torch.manual_seed(seed)
    rng = random.Random(seed)
    optimizer = torch.optim.AdamW(list(params), lr=lr, weight_decay=weight_decay)
    order = list(range(len(examples)))
    steps_per_epoch = (len(order) + batch_size - 1) // batch_size
    total = steps_per_epoch * epochs
    done = 0
    last_epoch: list[float] = []
    model.train()
    for _ in range(epochs):
        rng.shuffle(order)
        last_epoch = []
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            enc = hf.encode(tokenizer, [examples[i].text for i in idx], max_length)
            labels = torch.tensor([label_ids[i] for i in idx], dtype=torch.long)
            loss = loss_fn(enc, labels)
            optimizer.zero_grad()
            loss.backward()  # type: ignore[no-untyped-call]
            optimizer.step()
            last_epoch.append(float(loss.detach()))
            done += 1
            progress(f"{name}:train", done, total)
    model.eval()
    return sum(last_epoch) / max(len(last_epoch), 1)


def freeze_all_but(model: torch.nn.Module, trainable: Sequence[torch.nn.Module]) -> list[Any]:
    for p in model.parameters():
        p.requires_grad_(False)
    params: list[Any] = []
    for module in trainable:
        for p in module.parameters():
            p.requires_grad_(True)
            params.append(p)
    return params
