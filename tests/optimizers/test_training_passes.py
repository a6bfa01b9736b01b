from __future__ import annotations

import numpy as np
import pytest
import torch

from optimizers import hf
from optimizers.dataset import Dataset, Example
from optimizers.errors import PassError
from optimizers.onnx_runner import Runner
from optimizers.passes.base import PassContext
from optimizers.passes.distill import Distill, DistillConfig, evenly_spaced
from optimizers.passes.export_onnx import ExportOnnx, ExportOnnxConfig
from optimizers.passes.finetune import Finetune, FinetuneConfig
from optimizers.passes.prune import Prune, PruneConfig, linear_sparsity
from optimizers.training import encoder_layers


def _linear(layer: torch.nn.Module, name: str) -> torch.nn.Linear:
    """The linear submodule at dotted ``name`` of an encoder layer."""
    sub = layer.get_submodule(name)
    assert isinstance(sub, torch.nn.Linear), name
    return sub


def _weights(ref):
    return {
        k: v.clone()
        for k, v in hf.load_model(ref.path, "classify", ref.labels).state_dict().items()
    }


def _accuracy(ref, data):
    out = Runner(ref).run([e.text for e in data.eval])
    gold = [data.label_id(e.label) for e in data.eval]
    return float(np.mean(out.argmax(1) == np.array(gold)))


def test_finetune_trains_the_head_and_leaves_the_input_untouched(tiny_model, intent_data, tmp_path):
    before = _weights(tiny_model)
    seen = []
    ctx = PassContext(data=intent_data, progress=lambda w, d, t: seen.append((w, d, t)))
    out = Finetune(FinetuneConfig(epochs=2, lr=5e-3, train_last_layers=1), ctx).run(
        tiny_model, tmp_path
    )
    after = _weights(out)
    assert torch.equal(_weights(tiny_model)["classifier.weight"], before["classifier.weight"])
    assert not torch.equal(after["classifier.weight"], before["classifier.weight"])
    assert not torch.equal(
        after["bert.encoder.layer.1.output.dense.weight"],
        before["bert.encoder.layer.1.output.dense.weight"],
    )
    assert torch.equal(
        after["bert.encoder.layer.0.output.dense.weight"],
        before["bert.encoder.layer.0.output.dense.weight"],
    )
    assert seen[-1][0] == "finetune:train"
    assert seen[-1][1] == seen[-1][2]
    assert out.labels == intent_data.labels
    assert np.isfinite(out.metrics["train_loss"])


def test_finetune_learns_the_intents(tiny_model, intent_data, tmp_path):
    ctx = PassContext(data=intent_data)
    base_onnx = ExportOnnx(ExportOnnxConfig(), ctx).run(tiny_model, tmp_path / "base")
    tuned = Finetune(FinetuneConfig(epochs=6, lr=3e-3, train_last_layers=2), ctx).run(
        tiny_model, tmp_path / "ft"
    )
    tuned_onnx = ExportOnnx(ExportOnnxConfig(), ctx).run(tuned, tmp_path / "onnx")
    assert _accuracy(tuned_onnx, intent_data) > max(0.6, _accuracy(base_onnx, intent_data) + 0.2)


def test_finetune_needs_labels(tiny_model, tmp_path):
    unlabelled = Dataset(train=(Example("hi"),), eval=(Example("yo"),), labels=())
    with pytest.raises(PassError, match="labelled"):
        Finetune(FinetuneConfig(), PassContext(data=unlabelled)).run(tiny_model, tmp_path)


@pytest.mark.parametrize("sparsity", [0.3, 0.6])
def test_magnitude_pruning_reaches_its_target_and_is_permanent(
    tiny_model, intent_data, tmp_path, sparsity
):
    out = Prune(PruneConfig(method="magnitude", sparsity=sparsity)).run(tiny_model, tmp_path / "p")
    net = hf.load_model(out.path, "classify", out.labels)
    assert linear_sparsity(encoder_layers(net)) >= sparsity - 1e-3
    assert not any("mask" in k or "orig" in k for k in net.state_dict())
    onnx = ExportOnnx(ExportOnnxConfig(), PassContext(data=intent_data)).run(out, tmp_path / "o")
    assert np.all(np.isfinite(Runner(onnx).run(["turn on the lights"])))


def test_ffn_pruning_zeroes_whole_channels(tiny_model, tmp_path):
    out = Prune(PruneConfig(method="ffn", sparsity=0.5)).run(tiny_model, tmp_path)
    net = hf.load_model(out.path, "classify", out.labels)
    for layer in encoder_layers(net):
        intermediate, output = _linear(layer, "intermediate.dense"), _linear(layer, "output.dense")
        dead = intermediate.weight.abs().sum(1) == 0
        assert int(dead.sum()) == intermediate.weight.shape[0] // 2
        assert torch.all(output.weight[:, dead] == 0)
        assert torch.all(intermediate.bias[dead] == 0)
    assert out.metrics["sparsity"] == pytest.approx(0.5)


def test_head_pruning_zeroes_the_weakest_heads(tiny_model, tmp_path):
    out = Prune(PruneConfig(method="heads", sparsity=0.25)).run(tiny_model, tmp_path)
    net = hf.load_model(out.path, "classify", out.labels)
    width = 64 // 4
    dead = 0
    for layer in encoder_layers(net):
        q = _linear(layer, "attention.self.query").weight
        dead += sum(int(q[h * width : (h + 1) * width].abs().sum() == 0) for h in range(4))
    assert dead == 2  # 25% of 2 layers x 4 heads
    assert out.metrics["sparsity"] == pytest.approx(0.25)


def test_layer_pruning_drops_blocks_and_still_exports(make_tiny_model, intent_data, tmp_path):
    four = make_tiny_model(layers=4)
    out = Prune(PruneConfig(method="layers", sparsity=0.5)).run(four, tmp_path / "p")
    net = hf.load_model(out.path, "classify", out.labels)
    assert len(encoder_layers(net)) == 2
    assert net.config.num_hidden_layers == 2
    onnx = ExportOnnx(ExportOnnxConfig(), PassContext(data=intent_data)).run(out, tmp_path / "o")
    assert Runner(onnx).run(["call mom"]).shape == (1, len(four.labels))


def test_evenly_spaced_layer_choice():
    assert evenly_spaced(6, 3) == [0, 2, 5] or evenly_spaced(6, 3) == [0, 2, 4]
    assert evenly_spaced(6, 2) == [0, 5]
    assert evenly_spaced(6, 1) == [5]
    assert evenly_spaced(2, 4) == [0, 1]


def test_distill_builds_a_smaller_student_initialised_from_the_teacher(
    make_tiny_model, intent_data, tmp_path
):
    teacher = make_tiny_model(layers=4, seed=3)
    ctx = PassContext(data=intent_data)
    teacher = Finetune(FinetuneConfig(epochs=4, lr=3e-3, train_last_layers=2), ctx).run(
        teacher, tmp_path / "t"
    )
    # Half the training texts lose their labels: the teacher labels them first.
    half = tuple(e if i % 2 else type(e)(e.text, None) for i, e in enumerate(intent_data.train))
    data = Dataset(train=half, eval=intent_data.eval, labels=intent_data.labels)
    seen = []
    student = Distill(
        DistillConfig(student_layers=2, epochs=4, lr=1e-3, temperature=2.0),
        PassContext(data=data, progress=lambda w, d, t: seen.append(w)),
    ).run(teacher, tmp_path / "s")
    s_net = hf.load_model(student.path, "classify", student.labels)
    assert len(encoder_layers(s_net)) == 2
    assert sum(p.numel() for p in s_net.parameters()) < sum(
        p.numel() for p in hf.load_model(teacher.path, "classify", teacher.labels).parameters()
    )
    assert "distill:train" in seen
    t_onnx = ExportOnnx(ExportOnnxConfig(), ctx).run(teacher, tmp_path / "to")
    s_onnx = ExportOnnx(ExportOnnxConfig(), ctx).run(student, tmp_path / "so")
    t_pred = Runner(t_onnx).run([e.text for e in data.eval]).argmax(1)
    s_pred = Runner(s_onnx).run([e.text for e in data.eval]).argmax(1)
    assert float(np.mean(t_pred == s_pred)) >= 0.7
    assert student.lineage[-1] == "distill:2L"


def test_distill_with_a_narrower_student(tiny_model, intent_data, tmp_path):
    student = Distill(
        DistillConfig(student_layers=1, student_hidden=32, epochs=1), PassContext(data=intent_data)
    ).run(tiny_model, tmp_path)
    net = hf.load_model(student.path, "classify", student.labels)
    assert net.config.hidden_size == 32
    assert len(encoder_layers(net)) == 1
