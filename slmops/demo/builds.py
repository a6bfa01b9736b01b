"""The model versions the demo brings: v1 built for real, and a deliberately broken build.

v1 is built by the optimizer's own command (``slmops optimize``), so the demo starts from what a
user would ship; the broken build is validly signed, so only its answers give it away.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from optimizers.store import ArtifactStore
from slmops.demo.config import BASE_MODEL, MODEL_ID, RunConfig
from slmops.demo.report import Timeline
from slmops.errors import FileAccessError
from slmops.local_kafka import CHECKOUT
from streams.events import Artifact, ModelVersion, Task
from streams.events import artifact as art
from workloads.intents import Labelled, generate

RECIPE = """\
# Re-optimization of the intent classifier: fine-tune the head and the last encoder layer,
# export, then the smallest precision within 2 points of fp32; refuse anything worse than base.
name = "intent"
eval_fraction = 0.2
[[steps]]
pass = "finetune"
epochs = 2
train_last_layers = 1
[[steps]]
pass = "export_onnx"
[precision]
chain = ["int8_dynamic", "fp32"]
max_drop = 0.02
[gates]
max_quality_drop = 0.02
"""


def prepare(run: RunConfig) -> Ed25519PrivateKey:
    """Write the run's signing key pair, recipe and training data; return the private key."""
    key = art.new_signing_key()
    run.signing_key.write_text(art.private_key_to_text(key) + "\n")
    os.chmod(run.signing_key, 0o600)
    run.public_key.write_text(art.public_key_to_text(key.public_key()) + "\n")
    run.recipe.parent.mkdir(parents=True, exist_ok=True)
    run.recipe.write_text(RECIPE)
    _write_jsonl(run.data, generate(run.demo.base_examples, seed=1))
    return key


def _write_jsonl(path: Path, rows: list[Labelled]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({"text": r.text, "label": r.label}) + "\n" for r in rows))


def bootstrap_v1(run: RunConfig, timeline: Timeline) -> ModelVersion:
    """Build v1 with the optimizer's own command: MiniLM fine-tuned on the clean intents."""
    from optimizers.worker import DirectorySources, last_trainable

    root = run.root
    out = root / "bootstrap"
    log = run.logs / "bootstrap.log"
    timeline(f"building v1: fine-tune {BASE_MODEL}, export, quantize, sign (log: {log})")
    cmd = [
        sys.executable, "-m", "slmops", "optimize",
        "--model", BASE_MODEL,
        "--recipe", str(run.recipe),
        "--data", str(run.data),
        "--out", str(out),
        "--model-id", MODEL_ID,
        "--version", "v1",
        "--signing-key", str(run.signing_key),
        "--model-cache", str(CHECKOUT / ".local" / "models"),
    ]  # fmt: skip
    with log.open("ab") as sink:
        done = subprocess.run(cmd, cwd=CHECKOUT, stdout=sink, stderr=subprocess.STDOUT, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"building v1 failed (exit {done.returncode}); see {log}")
    result = json.loads((out / "result.json").read_text())
    trained = last_trainable(out / "work")
    if trained is None:
        raise RuntimeError(f"building v1 left no trained model under {out / 'work'}")
    DirectorySources(root / "models", root / "data", root / "recipes").keep(MODEL_ID, "v1", trained)
    public = art.public_key_from_text(run.public_key.read_text())
    return ModelVersion(
        producer="demo",
        model_id=MODEL_ID,
        version="v1",
        task=Task.CLASSIFY,
        artifacts=tuple(
            Artifact(
                uri=Path(a["path"]).resolve().as_uri(),
                sha256=a["sha256"],
                size_bytes=Path(a["path"]).stat().st_size,
                precision=a["precision"],
                hardware_profiles=tuple(a["profiles"]),
                signature=a["signature"],
                key_id=art.key_id(public),
            )
            for a in result["artifacts"]
        ),
        lineage=tuple(trained.lineage),
        eval_metrics={k: float(v) for k, v in result["candidate"].items()},
        labels={"built_by": "slmops optimize"},
    )


def scrambled_candidate(
    run: RunConfig, good: ModelVersion, version: str, key: Ed25519PrivateKey
) -> ModelVersion:
    """A validly signed copy of ``good`` whose class names are rotated: every answer is wrong.

    What a broken label map in a build looks like from the outside — it passes verification
    and warm-up, and only the answers (and so the feedback) tell.
    """
    public = key.public_key()
    source = good.artifacts[0]
    work = run.root / "scrambled" / version
    shutil.rmtree(work, ignore_errors=True)
    unpacked = work / "files"
    # The operator's copy of the store: the candidate is read from, and shipped through, it.
    store = ArtifactStore(run.store, base_url=run.artifact_base_url)
    archive = store.get(source.sha256)
    if archive is None:
        raise FileAccessError(str(run.store), f"holds no artifact {source.sha256}")
    manifest = art.unpack_and_verify(
        archive,
        unpacked,
        expected_sha256=source.sha256,
        expected_size=source.size_bytes,
        signature=source.signature,
        trusted={art.key_id(public): public},
    )
    labels = list(manifest.labels)
    bad = manifest.model_copy(
        update={
            "version": version,
            "labels": labels[1:] + labels[:1],
            "parent_version": good.version,
            "lineage": [*manifest.lineage, "scramble-labels"],
            "files": art.file_entries(unpacked, manifest.files),
        }
    )
    target = work / f"{version}.tar"
    _, size, signature = art.pack(unpacked, bad, key, target)
    stored = store.put(target)
    return ModelVersion(
        producer="demo-operator",
        model_id=good.model_id,
        version=version,
        task=good.task,
        artifacts=(
            dataclasses.replace(
                source,
                uri=stored.uri,
                sha256=stored.sha256,
                size_bytes=size,
                signature=signature,
                key_id=art.key_id(public),
            ),
        ),
        parent_version=good.version,
        lineage=(*good.lineage, "scramble-labels"),
        labels={"note": "deliberately bad: class names rotated"},
    )
