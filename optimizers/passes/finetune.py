"""``finetune``: train a classification head (and optionally the last encoder layers).

Feedback data is small and devices need a model that stays close to the pretrained encoder,
so by default only the head (and BERT's pooler) learn; ``train_last_layers`` unfreezes the top
blocks when the head alone cannot separate the intents. The label set comes from the data
(sorted), so the head's ids are stable across re-training.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import ClassVar

import torch
from pydantic import Field

from optimizers import hf
from optimizers.errors import PassError
from optimizers.model import Format, ModelRef
from optimizers.passes.base import Pass, PassConfig
from optimizers.training import encoder_layers, freeze_all_but, train

log = logging.getLogger(__name__)


class FinetuneConfig(PassConfig):
    epochs: int = Field(default=3, ge=1)
    batch_size: int = Field(default=16, ge=1)
    lr: float = Field(default=2e-3, gt=0)
    train_last_layers: int = Field(default=0, ge=0)
    max_examples: int | None = Field(default=None, ge=1)


class Finetune(Pass[FinetuneConfig]):
    name: ClassVar[str] = "finetune"
    accepts: ClassVar[frozenset[Format]] = frozenset({"hf"})
    produces: ClassVar[Format | None] = "hf"
    Config = FinetuneConfig

    def run(self, model: ModelRef, out_dir: Path) -> ModelRef:
        self.check_input(model)
        data = self.context.data
        if data is None or not data.labelled_train:
            raise PassError(self.name, "needs labelled training data", model=str(model.path))
        if model.task != "classify":
            raise PassError(self.name, "fine-tunes classifiers only", model=str(model.path))
        cfg = self.config
        torch.manual_seed(self.context.seed)
        net = hf.load_model(model.path, "classify", data.labels)
        tokenizer = hf.load_tokenizer(model.path)
        layers = encoder_layers(net)
        if cfg.train_last_layers > len(layers):
            raise PassError(
                self.name, f"train_last_layers={cfg.train_last_layers} > {len(layers)} layers"
            )
        head = getattr(net, "classifier", None)
        if not isinstance(head, torch.nn.Module):
            raise PassError(self.name, f"{type(net).__name__} has no classifier head")
        trainable: list[torch.nn.Module] = [head]
        pooler = getattr(net.base_model, "pooler", None)
        if isinstance(pooler, torch.nn.Module):
            trainable.append(pooler)
        if cfg.train_last_layers:
            trainable += list(layers[-cfg.train_last_layers :])
        params = freeze_all_but(net, trainable)
        examples = data.labelled_train[: cfg.max_examples]
        label_ids = [data.label_id(e.label) for e in examples if e.label is not None]

        def loss_fn(enc: dict[str, torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
            loss: torch.Tensor = torch.nn.functional.cross_entropy(net(**enc).logits, labels)
            return loss

        final = train(
            name=self.name,
            model=net,
            tokenizer=tokenizer,
            examples=examples,
            label_ids=label_ids,
            loss_fn=loss_fn,
            params=params,
            epochs=cfg.epochs,
            batch_size=cfg.batch_size,
            lr=cfg.lr,
            max_length=model.max_length,
            seed=self.context.seed,
            progress=self.context.progress,
        )
        log.info("finetuned examples=%d final_loss=%.4f", len(examples), final)
        for p in net.parameters():
            p.requires_grad_(True)
        out = model.derive(
            path=out_dir, labels=data.labels, metrics={"train_loss": final}, step=self.name
        )
        return hf.save(net, tokenizer, out)
