"""Errors of the optimizer workers.

Every error a caller can act on derives from :class:`OptimizerError`::

    OptimizerError
    ├── RecipeError            a recipe that must not start: unknown pass, bad config, broken chain
    ├── DataError              a data file that cannot feed a pass (unreadable, bad label, empty)
    ├── ModelLoadError         a base model that cannot be found or loaded offline
    ├── PassError              a pass that failed while running (wraps the third-party exception)
    │   └── ExportMismatchError    ONNX outputs differ from torch beyond the tolerance
    └── CandidateRefused       the candidate failed a gate; carries the measurements that failed

Third-party exceptions (torch, onnx, onnxruntime) are wrapped at the pass boundary with
``raise PassError(...) from exc`` so the worker can report them without knowing those libraries.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from streams.events import Measurement


class OptimizerError(Exception):
    """Root of the optimizer errors; the message is built from the fields."""


class RecipeError(OptimizerError):
    def __init__(self, reason: str, *, recipe: str | None = None, step: int | None = None) -> None:
        self.reason = reason
        self.recipe = recipe
        self.step = step
        where = recipe or "recipe"
        if step is not None:
            where += f" step {step}"
        super().__init__(f"{where}: {reason}")


class DataError(OptimizerError):
    def __init__(self, reason: str, *, path: str | None = None, line: int | None = None) -> None:
        self.reason = reason
        self.path = path
        self.line = line
        where = f"{path}:{line}: " if path and line else (f"{path}: " if path else "")
        super().__init__(f"{where}{reason}")


class ModelLoadError(OptimizerError):
    def __init__(self, model: str, reason: str) -> None:
        self.model = model
        self.reason = reason
        super().__init__(f"cannot load model {model!r}: {reason}")


class PassError(OptimizerError):
    def __init__(self, pass_name: str, reason: str, *, model: str | None = None) -> None:
        self.pass_name = pass_name
        self.reason = reason
        self.model = model
        suffix = f" (model {model})" if model else ""
        super().__init__(f"pass {pass_name!r} failed: {reason}{suffix}")


class ExportMismatchError(PassError):
    def __init__(self, *, max_abs_diff: float, tolerance: float, model: str | None = None) -> None:
        self.max_abs_diff = max_abs_diff
        self.tolerance = tolerance
        super().__init__(
            "export_onnx",
            f"onnxruntime output differs from torch by {max_abs_diff:.3g} > {tolerance:.3g}",
            model=model,
        )


class CandidateRefused(OptimizerError):
    """A gate refused the candidate; ``failed`` holds the numbers that failed."""

    def __init__(self, model_id: str, failed: Sequence[Measurement]) -> None:
        self.model_id = model_id
        self.failed = tuple(failed)
        parts = [
            f"{m.metric}={m.value:.6g} (limit {m.comparison} {m.threshold:.6g})"
            if m.value is not None and m.threshold is not None
            else f"{m.metric}: {m.detail or 'not measured'}"
            for m in self.failed
        ]
        super().__init__(f"candidate for {model_id} refused: " + "; ".join(parts))
