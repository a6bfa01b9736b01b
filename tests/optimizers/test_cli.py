from __future__ import annotations

import json

from optimizers import dataset, intents
from slmops.cli import main
from streams.events.artifact import new_signing_key, private_key_to_text

RECIPE = """
name = "cli"
[[steps]]
pass = "finetune"
epochs = 1
lr = 0.003
[[steps]]
pass = "export_onnx"
[precision]
chain = ["int8_static", "fp32"]
max_drop = 1.0
calibration_size = 16
"""


def _args(tiny_model, recipe, data, out, *extra):
    return [
        "optimize",
        "--model",
        str(tiny_model.path),
        "--recipe",
        str(recipe),
        "--data",
        str(data),
        "--out",
        str(out),
        "--max-length",
        "32",
        "--model-id",
        "intent",
        *extra,
    ]


def test_optimize_prints_progress_and_a_summary_and_exits_zero(
    tiny_model, write_recipe, tmp_path, capsys
):
    data = tmp_path / "intents.jsonl"
    dataset.write_jsonl(data, intents.generate(120, seed=4))
    key_file = tmp_path / "key"
    key_file.write_text(private_key_to_text(new_signing_key()))
    code = main(
        _args(
            tiny_model, write_recipe(RECIPE), data, tmp_path / "out", "--signing-key", str(key_file)
        )
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "finetune:train" in captured.err
    assert "calibrate" in captured.err
    assert "baseline" in captured.out
    assert "candidate" in captured.out
    assert "accepted: int8_static" in captured.out
    result = json.loads((tmp_path / "out" / "result.json").read_text())
    assert result["accepted"] is True
    assert result["artifacts"][0]["precision"] == "int8_static"


def test_optimize_exits_non_zero_on_refusal(tiny_model, write_recipe, tmp_path, capsys):
    data = tmp_path / "intents.jsonl"
    dataset.write_jsonl(data, intents.generate(120, seed=4))
    recipe = write_recipe(
        RECIPE.replace('["int8_static", "fp32"]', '["fp32"]') + "[gates]\nmax_size_bytes = 1000\n"
    )
    code = main(_args(tiny_model, recipe, data, tmp_path / "out"))
    captured = capsys.readouterr()
    assert code == 3
    assert "FAIL size_bytes" in captured.out
    assert (tmp_path / "out" / "signing-key.pub").exists()
    assert json.loads((tmp_path / "out" / "result.json").read_text())["accepted"] is False


def test_optimize_reports_a_bad_recipe_without_running(tiny_model, write_recipe, tmp_path, capsys):
    data = tmp_path / "intents.jsonl"
    dataset.write_jsonl(data, intents.generate(50, seed=4))
    code = main(
        _args(tiny_model, write_recipe(RECIPE.replace("epochs", "epoks")), data, tmp_path / "out")
    )
    assert code == 1
    assert "epoks" in capsys.readouterr().err
    assert not (tmp_path / "out" / "work").exists()
