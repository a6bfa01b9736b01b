"""``distill``: a smaller student learns from the teacher (the input model).

Loss = ``alpha`` x cross-entropy on labels + (1 - ``alpha``) x T^2 x KL(student || teacher) on
logits softened by temperature T (Hinton et al.; T^2 keeps gradient scales comparable across
temperatures). The student has ``student_layers`` blocks and optionally a smaller hidden size;
where shapes allow (same hidden size) it starts from the teacher's embeddings, head and evenly
spaced blocks, which converges far faster than a random start.

With ``teacher_labels`` the teacher first labels the unlabelled examples (the two-stage
recipe: label, then train), so feedback text without labels still teaches the student.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import ClassVar

import torch
from pydantic import Field
from transformers import AutoConfig, AutoModelForSequenceClassification

from optimizers import hf
from optimizers.dataset import Example
from optimizers.errors import PassError
from optimizers.model import Format, ModelRef
from optimizers.passes.base import Pass, PassConfig
from optimizers.training import encoder_layers, train

log = logging.getLogger(__name__)


class DistillConfig(PassConfig):
    student_layers: int = Field(default=2, ge=1)
    student_hidden: int | None = Field(default=None, ge=8, description="default: teacher's")
    temperature: float = Field(default=2.0, gt=0)
    alpha: float = Field(default=0.5, ge=0.0, le=1.0, description="weight of the label loss")
    teacher_labels: bool = Field(default=True, description="teacher labels unlabelled data")
    epochs: int = Field(default=3, ge=1)
    batch_size: int = Field(default=16, ge=1)
    lr: float = Field(default=1e-4, gt=0)


def evenly_spaced(n: int, k: int) -> list[int]:
    """``k`` of ``range(n)`` spread from the first to the last (k=1: the last)."""
    if k >= n:
        return list(range(n))
    if k == 1:
        return [n - 1]
    return [round(i * (n - 1) / (k - 1)) for i in range(k)]


class Distill(Pass[DistillConfig]):
    name: ClassVar[str] = "distill"
    accepts: ClassVar[frozenset[Format]] = frozenset({"hf"})
    produces: ClassVar[Format | None] = "hf"
    Config = DistillConfig

    def run(self, model: ModelRef, out_dir: Path) -> ModelRef:
        self.check_input(model)
        cfg = self.config
        data = self.context.data
        if data is None or not data.train:
            raise PassError(self.name, "needs training data", model=str(model.path))
        if model.task != "classify":
            raise PassError(self.name, "distils classifiers only", model=str(model.path))
        teacher = hf.load_model(model.path, "classify", model.labels or data.labels)
        tokenizer = hf.load_tokenizer(model.path)
        labels = hf.labels_of(teacher)
        student = self._student(teacher, cfg)
        examples, label_ids = self._labelled(
            teacher, tokenizer, data.train, labels, model.max_length
        )
        t = cfg.temperature

        def loss_fn(enc: dict[str, torch.Tensor], gold: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                t_logits = teacher(**enc).logits
            s_logits = student(**enc).logits
            task = torch.nn.functional.cross_entropy(s_logits, gold)
            kl = torch.nn.functional.kl_div(
                torch.log_softmax(s_logits / t, dim=-1),
                torch.softmax(t_logits / t, dim=-1),
                reduction="batchmean",
            )
            loss: torch.Tensor = cfg.alpha * task + (1 - cfg.alpha) * t * t * kl
            return loss

        final = train(
            name=self.name,
            model=student,
            tokenizer=tokenizer,
            examples=examples,
            label_ids=label_ids,
            loss_fn=loss_fn,
            params=list(student.parameters()),
            epochs=cfg.epochs,
            batch_size=cfg.batch_size,
            lr=cfg.lr,
            max_length=model.max_length,
            seed=self.context.seed,
            progress=self.context.progress,
        )
        log.info(
            "distilled teacher_layers=%d student_layers=%d examples=%d final_loss=%.4f",
            len(encoder_layers(teacher)),
            cfg.student_layers,
            len(examples),
            final,
        )
        out = model.derive(
            path=out_dir,
            labels=labels,
            metrics={"train_loss": final},
            step=f"{self.name}:{cfg.student_layers}L",
        )
        return hf.save(student, tokenizer, out)

    def _student(self, teacher: hf.PreTrainedModel, cfg: DistillConfig) -> hf.PreTrainedModel:
        t_cfg = teacher.config
        s_cfg = AutoConfig.for_model(**t_cfg.to_dict())
        s_cfg.num_hidden_layers = cfg.student_layers
        same_width = cfg.student_hidden in (None, t_cfg.hidden_size)
        if not same_width:
            assert cfg.student_hidden is not None
            if cfg.student_hidden % t_cfg.num_attention_heads:
                raise PassError(self.name, "student_hidden must divide by the number of heads")
            s_cfg.hidden_size = cfg.student_hidden
            s_cfg.intermediate_size = cfg.student_hidden * 4
        torch.manual_seed(self.context.seed)
        make = AutoModelForSequenceClassification.from_config
        # transformers leaves from_config unannotated.
        student: hf.PreTrainedModel = make(s_cfg)  # type: ignore[no-untyped-call]
        if same_width:
            t_layers = encoder_layers(teacher)
            picks = evenly_spaced(len(t_layers), cfg.student_layers)
            state = teacher.state_dict()
            prefix = "encoder.layer."
            mapped = {}
            for key, value in state.items():
                if prefix not in key:
                    mapped[key] = value
                    continue
                head, rest = key.split(prefix, 1)
                idx, tail = rest.split(".", 1)
                if int(idx) in picks:
                    mapped[f"{head}{prefix}{picks.index(int(idx))}.{tail}"] = value
            missing, unexpected = student.load_state_dict(mapped, strict=False)
            if unexpected:
                raise PassError(self.name, f"unexpected teacher weights: {unexpected[:3]}")
            log.info("student initialised from teacher layers=%s missing=%d", picks, len(missing))
        return student

    def _labelled(
        self,
        teacher: hf.PreTrainedModel,
        tokenizer: hf.PreTrainedTokenizerBase,
        train: tuple[Example, ...],
        labels: tuple[str, ...],
        max_length: int,
    ) -> tuple[list[Example], list[int]]:
        examples: list[Example] = []
        ids: list[int] = []
        unlabelled = [e for e in train if e.label is None]
        for e in train:
            if e.label is not None and e.label in labels:
                examples.append(e)
                ids.append(labels.index(e.label))
        if unlabelled and self.config.teacher_labels:
            with torch.no_grad():
                for start in range(0, len(unlabelled), 32):
                    chunk = unlabelled[start : start + 32]
                    logits = teacher(
                        **hf.encode(tokenizer, [e.text for e in chunk], max_length)
                    ).logits
                    for e, i in zip(chunk, logits.argmax(-1).tolist(), strict=True):
                        examples.append(Example(e.text, labels[i]))
                        ids.append(int(i))
            log.info("teacher labelled %d unlabelled examples", len(unlabelled))
        if not examples:
            raise PassError(self.name, "no labelled examples and teacher_labels is off")
        return examples, ids
