"""What the fleet runs for one version of a generative model, as an optimizer worker needs it.

An adapter candidate is trained on the transformers base (``hf``), exported for the exact
LoRA-ready build devices hold (``build``, whose packaged artifact has ``sha256``), and judged
against what serves today: that build with the version's adapter, or with none for the base.
A worker keeps one ``serving.json`` per version under ``<models>/<model_id>/<version>/``: the
base version's is written where the base is built, an accepted adapter's by the worker.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any

from optimizers.errors import DataError

SERVING_FILE = "serving.json"


@dataclasses.dataclass(frozen=True)
class Serving:
    hf: Path
    build: Path
    sha256: str
    adapter: Path | None = None
    """The adapter directory serving on the build (``adapter.onnx_adapter``); None: the base."""
    output_format: str = "text"
    output_schema: dict[str, Any] | None = None
    lora: Path | None = None
    """The serving adapter's peft factors (a ``lora`` pass output): a new adapter goes on
    from them instead of from nothing."""

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        doc = {
            "hf": str(self.hf.resolve()),
            "build": str(self.build.resolve()),
            "sha256": self.sha256,
            "adapter": str(self.adapter.resolve()) if self.adapter else None,
            "output_format": self.output_format,
            "output_schema": self.output_schema,
            "lora": str(self.lora.resolve()) if self.lora else None,
        }
        (directory / SERVING_FILE).write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")

    @classmethod
    def load(cls, directory: Path) -> Serving:
        path = directory / SERVING_FILE
        try:
            doc = json.loads(path.read_text())
            return cls(
                hf=Path(doc["hf"]),
                build=Path(doc["build"]),
                sha256=str(doc["sha256"]),
                adapter=Path(doc["adapter"]) if doc.get("adapter") else None,
                output_format=str(doc.get("output_format") or "text"),
                output_schema=doc.get("output_schema"),
                lora=Path(doc["lora"]) if doc.get("lora") else None,
            )
        except FileNotFoundError as exc:
            raise DataError(
                "no LoRA-ready base build on record for this version (an adapter recipe needs "
                "one: build the base with build_causal lora_targets)",
                path=str(path),
            ) from exc
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise DataError(f"unreadable: {exc}", path=str(path)) from exc

    def keep_adapter(self, adapter: Path, directory: Path, lora: Path | None = None) -> Serving:
        """This base with ``adapter`` (and its peft factors ``lora``) copied into
        ``directory``, recorded there."""
        if (directory / SERVING_FILE).exists() and (directory / "adapter").exists():
            return Serving.load(directory)
        kept = dataclasses.replace(
            self,
            adapter=_copy(adapter, directory / "adapter"),
            lora=_copy(lora, directory / "lora") if lora else None,
        )
        kept.save(directory)
        return kept


def _copy(source: Path, target: Path) -> Path:
    if not target.exists():
        staging = target.with_name(f".{target.name}.partial")
        shutil.rmtree(staging, ignore_errors=True)
        shutil.copytree(source, staging)
        staging.rename(target)
    return target
