"""Labelled (and unlabelled) text for fine-tuning, distillation, calibration and evaluation.

The file format is JSON lines, one ``{"text": ..., "label": ...}`` per line; ``label`` may be
absent or null for unlabelled text, which only distillation (teacher labelling) and
calibration use. The split into train / eval is a deterministic function of the text, so the
same file always gives the same held-out set, across runs and workers.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from optimizers.errors import DataError


@dataclass(frozen=True, slots=True)
class Example:
    text: str
    label: str | None = None


@dataclass(frozen=True, slots=True)
class Dataset:
    """Train and held-out examples plus the label set (sorted, so label ids are stable)."""

    train: tuple[Example, ...]
    eval: tuple[Example, ...]
    labels: tuple[str, ...]

    def label_id(self, label: str) -> int:
        return self.labels.index(label)

    @property
    def labelled_train(self) -> tuple[Example, ...]:
        return tuple(e for e in self.train if e.label is not None)

    @property
    def labelled_eval(self) -> tuple[Example, ...]:
        return tuple(e for e in self.eval if e.label is not None)


def read_jsonl(path: Path) -> list[Example]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise DataError(f"cannot read: {exc}", path=str(path)) from exc
    out: list[Example] = []
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"not JSON: {exc.msg}", path=str(path), line=n) from exc
        text = row.get("text") if isinstance(row, dict) else None
        if not isinstance(text, str) or not text.strip():
            raise DataError("needs a non-empty 'text'", path=str(path), line=n)
        label = row.get("label")
        if label is not None and not isinstance(label, str):
            raise DataError("'label' must be a string or null", path=str(path), line=n)
        out.append(Example(text, label))
    if not out:
        raise DataError("no examples", path=str(path))
    return out


def write_jsonl(path: Path, examples: Iterable[Example]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for e in examples:
            f.write(json.dumps({"text": e.text, "label": e.label}) + "\n")


def _in_eval(text: str, eval_fraction: float) -> bool:
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    return int.from_bytes(digest[:4], "big") / 2**32 < eval_fraction


def _halves(
    examples: Sequence[Example], eval_fraction: float, what: str
) -> tuple[tuple[Example, ...], tuple[Example, ...]]:
    """(train, held-out) by a hash of each text; both must hold something."""
    train = tuple(e for e in examples if not _in_eval(e.text, eval_fraction))
    held = tuple(e for e in examples if _in_eval(e.text, eval_fraction))
    if not held or not train:
        raise DataError(f"{len(examples)} {what} are too few to split train/eval")
    return train, held


def split(
    examples: Sequence[Example],
    *,
    eval_fraction: float = 0.2,
    labels: Sequence[str] | None = None,
) -> Dataset:
    """Split by a hash of the text; ``labels`` fixes the label set (else taken from the data)."""
    if not 0.0 < eval_fraction < 1.0:
        raise DataError(f"eval_fraction must be in (0, 1), got {eval_fraction}")
    found = sorted({e.label for e in examples if e.label is not None})
    label_set = tuple(labels) if labels is not None else tuple(found)
    unknown = set(found) - set(label_set)
    if unknown:
        raise DataError(f"labels not in the model's label set: {', '.join(sorted(unknown))}")
    train, held = _halves(examples, eval_fraction, "examples")
    return Dataset(train=train, eval=held, labels=label_set)


def split_answers(examples: Sequence[Example], *, eval_fraction: float = 0.2) -> Dataset:
    """Prompt/answer pairs (``label`` is the answer text, not a class) split like :func:`split`.

    There is no label set: answers are free text."""
    if not 0.0 < eval_fraction < 1.0:
        raise DataError(f"eval_fraction must be in (0, 1), got {eval_fraction}")
    train, held = _halves(examples, eval_fraction, "prompt/answer examples")
    return Dataset(train=train, eval=held, labels=())


def load(path: Path, *, eval_fraction: float = 0.2, labels: Sequence[str] | None = None) -> Dataset:
    return split(read_jsonl(path), eval_fraction=eval_fraction, labels=labels)
