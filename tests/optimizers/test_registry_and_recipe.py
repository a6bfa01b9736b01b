from __future__ import annotations

import subprocess
import sys

import pytest

from optimizers.errors import RecipeError
from optimizers.passes import REGISTRY, resolve
from optimizers.passes.base import Pass, PassConfig
from optimizers.passes.prune import PruneConfig
from optimizers.recipe import Gates, loads

GOOD = """
name = "intent"
[[steps]]
pass = "finetune"
epochs = 1
[[steps]]
pass = "prune"
method = "magnitude"
sparsity = 0.2
[[steps]]
pass = "export_onnx"
[precision]
chain = ["int8_dynamic", "fp32"]
[gates]
max_quality_drop = 0.05
"""


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_every_registry_entry_resolves_to_a_pass(name):
    cls = resolve(name)
    assert issubclass(cls, Pass)
    assert cls.name == name
    assert issubclass(cls.Config, PassConfig)
    assert cls.Config.model_config.get("extra") == "forbid"
    assert cls.accepts
    cls.parse_config({})  # every config has working defaults


def test_importing_the_package_does_not_load_torch():
    code = (
        "import optimizers, optimizers.passes, optimizers.cli, sys; "
        "print('torch' in sys.modules, 'onnxruntime' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False False"


def test_a_good_recipe_parses_whole():
    recipe = loads(GOOD)
    assert [s.name for s in recipe.steps] == ["finetune", "prune", "export_onnx"]
    prune = recipe.steps[1].config
    assert isinstance(prune, PruneConfig)
    assert prune.sparsity == 0.2
    assert recipe.precision.chain == ("int8_dynamic", "fp32")
    assert recipe.gates.max_quality_drop == 0.05


@pytest.mark.parametrize(
    ("text", "match"),
    [
        (GOOD.replace('pass = "prune"', 'pass = "prnue"'), "unknown pass 'prnue'"),
        (GOOD.replace("epochs = 1", "epocs = 1"), "epocs"),
        (GOOD.replace("sparsity = 0.2", "sparsity = 2.0"), "sparsity"),
        (GOOD.replace('[[steps]]\npass = "export_onnx"', ""), "must end in an fp32 'onnx'"),
        (GOOD + '[[steps]]\npass = "finetune"\n', "finetune accepts \\['hf'\\] but gets 'onnx'"),
        (GOOD.replace('["int8_dynamic", "fp32"]', '["int3"]'), "chain"),
        (GOOD.replace("max_quality_drop", "max_qualty_drop"), "max_qualty_drop"),
        (GOOD + '[[steps]]\npass = "package"\n', "run by the pipeline"),
        ("steps = [", "not TOML"),
    ],
)
def test_a_bad_recipe_is_refused_before_anything_runs(text, match):
    with pytest.raises(RecipeError, match=match):
        loads(text)


def test_the_error_names_the_failing_step():
    with pytest.raises(RecipeError) as err:
        loads(GOOD.replace("sparsity = 0.2", "sparsity = 2.0"))
    assert err.value.step == 1


def test_request_constraints_tighten_recipe_gates():
    gates = Gates(max_quality_drop=0.05, max_size_bytes=100)
    tight = gates.tightened(max_quality_drop=0.01, max_p95_latency_ms=5.0, max_size_bytes=1000)
    assert tight == Gates(max_quality_drop=0.01, max_size_bytes=100, max_p95_latency_ms=5.0)


CAUSAL = """
name = "slm"
[[steps]]
pass = "build_causal"
algorithm = "hqq"
block_size = 64
"""


def test_a_causal_recipe_walks_the_weight_only_chain_by_default():
    recipe = loads(CAUSAL)
    assert recipe.precision.chain == ("int4", "int8", "fp32")
    assert recipe.steps[0].config.model_dump()["precision"] == "fp32"
    assert recipe.precision.perplexity_budget("int8") == 0.02
    assert recipe.precision.perplexity_budget("int4") == 0.20
    own = loads(CAUSAL + '[precision]\nchain = ["int8", "fp32"]\n')
    assert own.precision.chain == ("int8", "fp32")


@pytest.mark.parametrize(
    ("text", "match"),
    [
        (CAUSAL + '[precision]\nchain = ["int8_dynamic", "fp32"]\n', "not \\['int8_dynamic'\\]"),
        (CAUSAL + '[precision.profiles]\narm = ["int8_static"]\n', "int8_static"),
        (CAUSAL.replace("block_size = 64", 'precision = "int4"'), "chosen by \\[precision\\]"),
        (GOOD.replace('["int8_dynamic", "fp32"]', '["int8", "fp32"]'), "weight-only"),
        (CAUSAL.replace("block_size = 64", "block_size = 100"), "power of two"),
    ],
)
def test_a_causal_recipe_refuses_precisions_it_cannot_build(text, match):
    with pytest.raises(RecipeError, match=match):
        loads(text)
