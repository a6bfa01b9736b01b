"""What every pass is: a name, the formats it accepts and produces, a typed config, ``run``.

``run(model, out_dir)`` reads ``model.path`` and writes only under ``out_dir``; it returns a new
:class:`~optimizers.model.ModelRef`. What a pass needs beyond its config (the data, a signing
key, where to report progress) comes in a :class:`PassContext`, shared by a pipeline's passes.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from optimizers.errors import RecipeError
from optimizers.model import Format, ModelRef

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from optimizers.dataset import Dataset
    from optimizers.store import ArtifactStore

Progress = Callable[[str, int, int], None]
"""``progress(what, done, total)``: training steps, calibration batches, timing runs."""


def no_progress(what: str, done: int, total: int) -> None:
    """The default: passes report, nobody listens."""


class PassConfig(BaseModel):
    """Base of every pass config: frozen, and unknown keys are errors (a typo must not pass)."""

    model_config = ConfigDict(frozen=True, extra="forbid")


@dataclass(frozen=True)
class PassContext:
    """What passes share in one pipeline run."""

    data: Dataset | None = None
    model_id: str = "model"
    version: str = "candidate"
    parent_version: str | None = None
    hardware_profiles: tuple[str, ...] = ()
    signing_key: Ed25519PrivateKey | None = None
    store: ArtifactStore | None = None
    reference: ModelRef | None = None
    progress: Progress = no_progress
    seed: int = 0
    extras: Mapping[str, Any] = field(default_factory=dict)


ConfigT = TypeVar("ConfigT", bound=PassConfig)


class Pass(abc.ABC, Generic[ConfigT]):
    """One step of a recipe. Subclasses set the class attributes and implement :meth:`run`."""

    name: ClassVar[str]
    accepts: ClassVar[frozenset[Format]]
    produces: ClassVar[Format | None]
    """``None``: the output has the input's format (evaluate)."""
    Config: type[ConfigT]

    def __init__(self, config: ConfigT, context: PassContext | None = None) -> None:
        self.config = config
        self.context = context or PassContext()

    @classmethod
    def parse_config(cls, raw: Mapping[str, Any], *, step: int | None = None) -> ConfigT:
        try:
            return cls.Config.model_validate(dict(raw))
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "config"
            raise RecipeError(f"{cls.name}: {where}: {first['msg']}", step=step) from exc

    @classmethod
    def output_format(cls, given: Format, config: ConfigT | None = None) -> Format:
        """The format ``run`` returns for ``given`` (a pass whose output depends on its
        config overrides this)."""
        return cls.produces if cls.produces is not None else given

    def check_input(self, model: ModelRef) -> None:
        if model.format not in self.accepts:
            raise RecipeError(
                f"{self.name} accepts {sorted(self.accepts)}, got a {model.format!r} model"
            )

    @abc.abstractmethod
    def run(self, model: ModelRef, out_dir: Path) -> ModelRef:
        """Build the output under ``out_dir`` from ``model`` (left untouched)."""
