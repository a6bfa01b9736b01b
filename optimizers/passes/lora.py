"""``lora``: fine-tune a causal LM with LoRA (peft) on prompt/answer pairs from feedback.

Each example is a consented prompt (``text``) and the answer it should have had (``label``):
the model learns the answer's tokens and the end token after them (the prompt's are masked out
of the loss); the prompt goes through the tokenizer's chat template when it has one, as a
device's ``/v1/chat/completions`` formats it, else it is tokenized as ``/v1/completions`` does.
The base weights stay frozen; peft adds rank-``rank`` factors to ``target_modules``.

Output:

- ``merge=false`` (default): a ``lora`` directory, peft's own files (``adapter_config.json``,
  ``adapter_model.safetensors``) plus the tokenizer; ``export_adapter`` turns it into the file
  a device feeds to its LoRA-ready base;
- ``merge=true``: a full ``hf`` model with the factors merged into the weights, for devices
  that run no adapters (built by ``build_causal`` like any causal LM).

The held-out split of the same feedback (:class:`~optimizers.dataset.Dataset`'s ``eval``)
measures the answer loss before and after (``eval_loss_before``/``eval_loss_after`` in the
metrics, with ``steps_per_s``), so a fine-tune that learned nothing is visible before any gate.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Literal

from pydantic import Field, field_validator

from optimizers import hf
from optimizers.dataset import Example
from optimizers.errors import PassError
from optimizers.lora_graph import check_targets
from optimizers.model import Format, ModelRef
from optimizers.passes.base import Pass, PassConfig

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedTokenizerBase

log = logging.getLogger(__name__)

IGNORE = -100
"""The label torch's cross entropy skips: prompt and padding positions."""


class LoraConfig(PassConfig):
    rank: int = Field(default=8, ge=1, le=256)
    alpha: int = Field(default=16, ge=1, description="scale of the update: alpha / rank")
    dropout: float = Field(default=0.0, ge=0, lt=1)
    target_modules: tuple[str, ...] = ("q_proj", "v_proj")
    steps: int = Field(default=60, ge=1)
    batch_size: int = Field(default=4, ge=1)
    learning_rate: float = Field(default=1e-3, gt=0)
    max_length: int = Field(default=192, ge=8, description="tokens per example (prompt + answer)")
    prompt_format: Literal["auto", "chat", "plain"] = Field(
        default="auto", description="auto: the chat template when the tokenizer has one"
    )
    merge: bool = Field(default=False, description="merge into a full model instead of an adapter")
    max_examples: int | None = Field(default=None, ge=1)
    resume: bool = Field(
        default=True,
        description="go on from the serving adapter's factors (the context's lora_init) when "
        "there are some; its rank and targets then apply",
    )

    @field_validator("target_modules")
    @classmethod
    def _known(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return check_targets(value)


class Lora(Pass[LoraConfig]):
    name: ClassVar[str] = "lora"
    accepts: ClassVar[frozenset[Format]] = frozenset({"hf"})
    produces: ClassVar[Format | None] = "lora"
    Config = LoraConfig

    @classmethod
    def output_format(cls, given: Format, config: LoraConfig | None = None) -> Format:
        return "hf" if config is not None and config.merge else "lora"

    def run(self, model: ModelRef, out_dir: Path) -> ModelRef:
        import torch
        from peft import LoraConfig as PeftLoraConfig
        from peft import get_peft_model

        self.check_input(model)
        if model.task != "generate":
            raise PassError(self.name, f"fine-tunes causal LMs, got task {model.task!r}")
        data = self.context.data
        train = [e for e in (data.labelled_train if data else ()) if e.label]
        if not train:
            raise PassError(self.name, "needs prompt/answer examples (text and label)")
        held_out = [e for e in (data.labelled_eval if data else ()) if e.label]
        cfg = self.config
        torch.manual_seed(self.context.seed)
        tokenizer = hf.load_tokenizer(model.path)
        net = hf.load_model(model.path, "generate")
        chat = self._chat(tokenizer)
        eos = _eos_id(tokenizer, net)
        train_rows = [
            _encode(tokenizer, e, chat, cfg.max_length, eos) for e in train[: cfg.max_examples]
        ]
        eval_rows = [_encode(tokenizer, e, chat, cfg.max_length, eos) for e in held_out]
        init = self.context.extras.get("lora_init") if cfg.resume else None
        if init is not None:
            from peft import PeftModel

            # The serving adapter learned the task already: the drift is learned on top of it.
            log.info("lora resumes from the serving adapter %s", init)
            peft_model = PeftModel.from_pretrained(net, str(init), is_trainable=True)
        else:
            peft_model = get_peft_model(
                net,
                PeftLoraConfig(
                    r=cfg.rank,
                    lora_alpha=cfg.alpha,
                    lora_dropout=cfg.dropout,
                    target_modules=list(cfg.target_modules),
                    bias="none",
                    task_type="CAUSAL_LM",
                ),
            )
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        before = _mean_loss(peft_model, eval_rows, pad, cfg.batch_size)
        params = [p for p in peft_model.parameters() if p.requires_grad]
        trainable = sum(p.numel() for p in params)
        optimizer = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=0.0)
        order = random.Random(self.context.seed)
        queue: list[int] = []
        started = time.monotonic()
        last = float("nan")
        peft_model.train()
        for step in range(1, cfg.steps + 1):
            if len(queue) < cfg.batch_size:
                refill = list(range(len(train_rows)))
                order.shuffle(refill)
                queue += refill
            batch = [train_rows[i] for i in queue[: cfg.batch_size]]
            del queue[: cfg.batch_size]
            loss = _loss(peft_model, batch, pad)
            optimizer.zero_grad()
            loss.backward()  # type: ignore[no-untyped-call]  # torch stubs
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            last = float(loss.detach())
            self.context.progress(f"{self.name}:train", step, cfg.steps)
        elapsed = time.monotonic() - started
        peft_model.eval()
        after = _mean_loss(peft_model, eval_rows, pad, cfg.batch_size)
        metrics = {
            "train_loss": last,
            "steps_per_s": cfg.steps / elapsed if elapsed > 0 else float("inf"),
            "trainable_params": float(trainable),
            "resumed": 1.0 if init is not None else 0.0,
        }
        if before is not None and after is not None:
            metrics |= {"eval_loss_before": before, "eval_loss_after": after}
        log.info(
            "lora model=%s rank=%d steps=%d in %.1fs (%.2f steps/s) examples=%d held_out=%d "
            "eval_loss %s -> %s",
            model.path,
            cfg.rank,
            cfg.steps,
            elapsed,
            metrics["steps_per_s"],
            len(train_rows),
            len(eval_rows),
            _fmt(before),
            _fmt(after),
        )
        step_name = f"{self.name}:r{cfg.rank}:{'+'.join(cfg.target_modules)}"
        out_dir.mkdir(parents=True, exist_ok=True)
        if cfg.merge:
            merged = peft_model.merge_and_unload()
            out = model.derive(path=out_dir, metrics=metrics, step=step_name + ":merged")
            return hf.save(merged, tokenizer, out)
        peft_model.save_pretrained(str(out_dir))
        tokenizer.save_pretrained(str(out_dir))
        out = model.derive(
            path=out_dir, format="lora", base=model.path, metrics=metrics, step=step_name
        )
        out.save_meta()
        return out

    def _chat(self, tokenizer: PreTrainedTokenizerBase) -> bool:
        if self.config.prompt_format == "chat" and not uses_chat(tokenizer, "auto"):
            raise PassError(self.name, "prompt_format=chat but the tokenizer has no chat template")
        return uses_chat(tokenizer, self.config.prompt_format)


def uses_chat(tokenizer: PreTrainedTokenizerBase, prompt_format: str) -> bool:
    """Whether prompts go through the chat template: ``chat``, or ``auto`` with a template."""
    has_template = bool(getattr(tokenizer, "chat_template", None))
    return prompt_format == "chat" or (prompt_format == "auto" and has_template)


def prompt_ids(tokenizer: PreTrainedTokenizerBase, prompt: str, chat: bool) -> list[int]:
    """What the model reads before the answer, tokenized as a device tokenizes it: the chat
    turn through the template (which writes its own special tokens), or the plain prompt with
    the tokenizer's special tokens (``/v1/completions``)."""
    if chat:
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
        )
        return list(tokenizer(str(text), add_special_tokens=False)["input_ids"])
    return list(tokenizer(prompt)["input_ids"])


def _eos_id(tokenizer: PreTrainedTokenizerBase, net: torch.nn.Module) -> int | None:
    """The token that ends an answer: the tokenizer's, else the model config's (the model
    must learn to stop, or a device decodes to its token budget)."""
    if tokenizer.eos_token_id is not None:
        return int(tokenizer.eos_token_id)
    eos = getattr(getattr(net, "config", None), "eos_token_id", None)
    if isinstance(eos, list):
        eos = eos[0] if eos else None
    return int(eos) if eos is not None else None


def _encode(
    tokenizer: PreTrainedTokenizerBase,
    example: Example,
    chat: bool,
    max_length: int,
    eos: int | None,
) -> tuple[list[int], list[int]]:
    """``(input ids, labels)``: the prompt's positions are :data:`IGNORE` in the labels."""
    p_ids = prompt_ids(tokenizer, example.text, chat)
    answer = tokenizer(str(example.label), add_special_tokens=False)
    a_ids = list(answer["input_ids"]) + ([eos] if eos is not None else [])
    ids = (p_ids + a_ids)[:max_length]
    labels = ([IGNORE] * len(p_ids) + a_ids)[:max_length]
    return ids, labels


def _batch(
    rows: Sequence[tuple[list[int], list[int]]], pad: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    import torch

    width = max(len(ids) for ids, _ in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for n, (i, lab) in enumerate(rows):
        ids[n, : len(i)] = torch.tensor(i)
        labels[n, : len(lab)] = torch.tensor(lab)
        mask[n, : len(i)] = 1
    return ids, labels, mask


def _loss(
    model: torch.nn.Module, rows: Sequence[tuple[list[int], list[int]]], pad: int
) -> torch.Tensor:
    ids, labels, mask = _batch(rows, pad)
    loss: torch.Tensor = model(input_ids=ids, attention_mask=mask, labels=labels).loss
    return loss


def _mean_loss(
    model: torch.nn.Module, rows: Sequence[tuple[list[int], list[int]]], pad: int, batch: int
) -> float | None:
    """Mean answer-token loss over ``rows`` (``None`` without held-out examples)."""
    import torch

    if not rows:
        return None
    total, tokens = 0.0, 0
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for start in range(0, len(rows), batch):
            chunk = rows[start : start + batch]
            n = sum(sum(1 for x in lab[1:] if x != IGNORE) for _, lab in chunk)
            total += float(_loss(model, chunk, pad)) * n
            tokens += n
    model.train(was_training)
    return total / tokens if tokens else None


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"
