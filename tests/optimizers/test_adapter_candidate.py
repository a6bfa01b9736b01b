"""An optimizer worker turning a request into an adapter candidate for the base devices hold.

A tiny LoRA-ready Llama serves as ``v1`` (packaged and signed like any base); the request names
a cohort and an adapter recipe; the worker trains on that cohort's prompt/answer pairs, judges
the new adapter against v1's answers on held-out prompts, and registers an ``onnx-adapter``
version naming v1's artifact as its base.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from optimizers import answers, dataset
from optimizers.dataset import Example
from optimizers.errors import DataError, OptimizerError
from optimizers.passes.base import PassContext
from optimizers.passes.build_causal import BuildCausal, BuildCausalConfig
from optimizers.passes.package import Package, PackageConfig
from optimizers.serving import Serving
from optimizers.store import ArtifactStore
from optimizers.worker import DirectorySources, OptimizerWorker
from streams.events import ADAPTER_FORMAT, OptimizationRequest, Task
from streams.events import artifact as art
from streams.kafka.connection import KafkaConnection
from tests.support import tiny_transformers

pytestmark = pytest.mark.slow

ROOMS = (
    "kitchen", "bedroom", "office", "garage", "hallway", "attic",
    "basement", "bathroom", "lounge", "study", "nursery", "porch",
)  # fmt: skip
ANSWER = "lights on please"

ADAPT = """
name = "adapt"
eval_fraction = 0.3
[[steps]]
pass = "lora"
rank = 4
steps = 60
learning_rate = 0.01
[[steps]]
pass = "export_adapter"
[gates]
max_quality_drop = 0.0
"""

WHOLE = """
name = "whole"
[[steps]]
pass = "export_onnx"
"""


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Ed25519PrivateKey, str, int]:
    """A sources root whose ``slm`` v1 is a packaged LoRA-ready tiny Llama; v1's sha256, size."""
    root = tmp_path_factory.mktemp("adapter-worker")
    key = Ed25519PrivateKey.generate()
    model, tokenizer = tiny_transformers.tiny_llama(seed=0)
    hf = tiny_transformers.save(model, tokenizer, root / "hf", task="generate", max_length=48)
    build = BuildCausal(BuildCausalConfig(precision="fp32", lora_targets=("q_proj", "v_proj"))).run(
        hf, root / "build"
    )
    package = Package(
        PackageConfig(),
        PassContext(
            model_id="slm", version="v1", signing_key=key, store=ArtifactStore(root / "store")
        ),
    )
    package.run(build, root / "pkg-v1")
    assert package.last is not None
    sha = package.last.stored.sha256
    Serving(hf=hf.path, build=build.path, sha256=sha).save(root / "models" / "slm" / "v1")
    rows = [Example(f"turn on the lights in the {r}", ANSWER) for r in ROOMS]
    dataset.write_jsonl(root / "data" / "slm.pilot.jsonl", rows)
    (root / "recipes").mkdir()
    (root / "recipes" / "adapt.toml").write_text(ADAPT)
    (root / "recipes" / "whole.toml").write_text(WHOLE)
    return root, key, sha, package.last.stored.size_bytes


def _worker(root: Path, key: Ed25519PrivateKey, name: str) -> OptimizerWorker:
    sources = DirectorySources(root / "models", root / "data", root / "recipes")
    return OptimizerWorker(
        KafkaConnection(bootstrap_servers="127.0.0.1:1"),
        sources,
        work_dir=root / f"work-{name}",
        store_dir=root / "store",
        signing_key=key,
    )


def test_a_cohort_request_gets_an_adapter_for_the_base_the_fleet_holds(fleet):
    root, key, base_sha, base_size = fleet
    worker = _worker(root, key, "pilot")
    request = OptimizationRequest(
        model_id="slm", base_version="v1", reason="quality drop", recipe="adapt", cohort="pilot"
    )
    result, version = worker._build(request)
    assert result.accepted, result.reason
    assert result.cohort == "pilot"
    # Judged on held-out prompts: the random base answers none right, the adapter all.
    assert result.baseline_metrics["answer_exact"] == 0.0
    assert result.candidate_metrics["answer_exact"] == 1.0
    assert (
        result.candidate_metrics["eval_loss_after"] < result.candidate_metrics["eval_loss_before"]
    )
    assert version is not None
    assert version.task is Task.GENERATE
    assert version.labels["cohort"] == "pilot"
    (artifact,) = version.artifacts
    assert artifact.format == ADAPTER_FORMAT
    assert artifact.base_sha256 == base_sha
    assert artifact.size_bytes < base_size
    # The artifact is what a device verifies: signed, and its manifest names the same base.
    public = key.public_key()
    manifest = art.unpack_and_verify(
        Path(artifact.uri.removeprefix("file://")),
        root / "unpacked",
        expected_sha256=artifact.sha256,
        expected_size=artifact.size_bytes,
        signature=artifact.signature,
        trusted={art.key_id(public): public},
    )
    assert manifest.base_sha256 == base_sha
    assert manifest.model_file == art.ADAPTER_FILE
    # The candidate is kept as a serving record: a later request may name it as its base.
    kept = worker.sources.serving("slm", version.version)
    assert kept.sha256 == base_sha
    assert kept.adapter is not None
    on_kept = answers.score(
        kept.build,
        kept.hf,
        [Example("turn on the lights in the kitchen", ANSWER)],
        adapter=kept.adapter / art.ADAPTER_FILE,
    )
    assert on_kept["answer_exact"] == 1.0
    assert result.candidate_metrics["resumed"] == 0.0  # v1 is the base: nothing to go on from
    # A request on the adapter version goes on from its factors, and is judged against it.
    again, second = worker._build(
        OptimizationRequest(
            model_id="slm",
            base_version=version.version,
            reason="quality drop",
            recipe="adapt",
            cohort="pilot",
        )
    )
    assert again.accepted, again.reason
    assert again.candidate_metrics["resumed"] == 1.0
    assert again.baseline_metrics["answer_exact"] == 1.0  # what serves is the first adapter
    assert second is not None
    assert second.parent_version == version.version
    assert second.artifacts[0].base_sha256 == base_sha


def test_a_cohort_request_with_a_whole_model_recipe_is_refused_with_the_reason(fleet):
    root, key, _, _ = fleet
    request = OptimizationRequest(
        model_id="slm", base_version="v1", reason="quality drop", recipe="whole", cohort="pilot"
    )
    with pytest.raises(OptimizerError, match="needs an adapter recipe"):
        _worker(root, key, "whole")._build(request)


def test_an_adapter_request_for_a_version_without_a_lora_ready_build_is_refused(fleet, tmp_path):
    root, key, _, _ = fleet
    request = OptimizationRequest(
        model_id="slm", base_version="v9", reason="quality drop", recipe="adapt", cohort="pilot"
    )
    with pytest.raises(DataError, match="no LoRA-ready base build"):
        _worker(root, key, "v9")._build(request)


def test_json_answers_match_as_values_and_text_answers_as_trimmed_text():
    assert answers.same_answer('{"a": 1, "b": 2}', '{"b":2,"a":1}', "json")
    assert not answers.same_answer('{"a": 1', '{"a": 1}', "json")
    assert answers.same_answer(" lights on ", "lights on")
    assert not answers.same_answer("lights off", "lights on")
