"""SimKD: projector shapes, the loss by loops, the wrapped student's forward, export to a fresh process, a run."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from safetensors.torch import load_file, save_file
from torch import nn
from torch.testing import assert_close

from distill.errors import ConfigError
from distill.export import export_model, load_exported
from distill.losses import build_loss_terms, simkd_loss
from distill.losses.simkd import reuse_teacher_classifier
from distill.models import create_model
from distill.module import DistillationModule
from distill.runner import prepare, run
from students.simkd import SimKDStudent, simkd_projector
from tests.losses.helpers import mean, pooled, randn, scalar

INPUT = (1, 8, 8)


def wrapped(teacher_name: str = "small_cnn", teacher_kwargs: dict | None = None, factor: int = 2):
    """A width-4 small_cnn student around ``teacher``'s classifier, as distill-train builds it."""
    student = create_model("small_cnn", 10, 1, {"width": 4})
    teacher = create_model(teacher_name, 10, 1, teacher_kwargs if teacher_kwargs is not None else {"width": 8})
    result = reuse_teacher_classifier(student, "small_cnn", {"width": 4}, teacher, teacher_name, "@-1", factor, INPUT)
    return result, student, teacher


def test_projector_is_the_references_bottleneck():
    projector = simkd_projector(8, 32, factor=4)
    convs = [m for m in projector if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size, c.groups, c.bias) for c in convs] == [
        (8, 8, (1, 1), 1, None), (8, 8, (3, 3), 1, None), (8, 32, (1, 1), 1, None)]
    assert [type(m).__name__ for m in projector] == ["Conv2d", "BatchNorm2d", "ReLU"] * 3
    assert projector(torch.randn(2, 8, 4, 3)).shape == (2, 32, 4, 3)
    assert simkd_projector(8, 32)[0].out_channels == 16  # the reference's default factor 2
    with pytest.raises(ValueError, match="factor"):
        simkd_projector(8, 4, factor=8)


def test_simkd_loss_by_loops():
    student, teacher = randn(2, 3, 2, 2, seed=80), randn(2, 3, 4, 4, seed=81)
    flat_student = [student[i, c, y, x].item() for i in range(2) for c in range(3) for y in range(2) for x in range(2)]
    squares = [(s - t) ** 2 for s, t in zip(flat_student, pooled(teacher, 2))]  # the teacher averaged to 2x2
    assert_close(simkd_loss(student, teacher), scalar(mean(squares)))
    same = randn(2, 3, 2, 2, seed=82)
    assert_close(simkd_loss(student, same), ((student - same) ** 2).mean())


def test_wrapped_student_predicts_with_the_teachers_own_classifier():
    result, student, teacher = wrapped("resnet10t", {})  # its last map is 1x1 on 8x8 inputs, the student's 2x2
    model = result.model
    assert model.head is teacher.fc and isinstance(model.backbone.fc, nn.Identity)
    assert model.pool_to == (1, 1) and result.name == "simkd_student"
    assert result.kwargs == {"student": "small_cnn", "student_kwargs": {"width": 4}, "student_channels": 16,
                             "teacher_channels": 512, "factor": 2, "pool_to": [1, 1]}
    assert result.label == "simkd(small_cnn + projector + resnet10t.fc)"
    model.double().eval()
    images = randn(3, *INPUT, seed=83)
    projected = model.projector(F.adaptive_avg_pool2d(student.stages(images), (1, 1)))
    expected = projected.mean(dim=(2, 3)) @ teacher.fc.weight.T + teacher.fc.bias
    assert_close(model(images), expected)


def test_term_trains_projector_and_backbone_never_the_teacher_classifier():
    result, _, teacher = wrapped()
    terms = build_loss_terms({"simkd": {}})
    module = DistillationModule(result.model, terms, lambda params: torch.optim.SGD(params, lr=0.1), 10, INPUT,
                                teacher=teacher)
    images = torch.randn(4, *INPUT)
    outputs = module._forward(images, torch.zeros(4, dtype=torch.long))
    teacher_map = teacher.stages(images)  # @-1 of small_cnn: its last stage, the map its classifier pools
    assert_close(outputs.teacher_features["@-1"], teacher_map)
    assert_close(outputs.student_features["projector"], result.model.forward_features(images))
    loss = module.training_step((images, torch.zeros(4, dtype=torch.long)), 0)
    assert_close(loss, simkd_loss(outputs.student_features["projector"], teacher_map).detach(), rtol=1e-5, atol=1e-6)
    loss.backward()
    assert result.model.projector[0].weight.grad.abs().sum() > 0
    assert result.model.backbone.stages[0][0].weight.grad.abs().sum() > 0
    assert result.model.head.weight.grad is None and not result.model.head.weight.requires_grad


def test_exported_simkd_student_gives_the_same_logits_in_a_fresh_process(tmp_path):
    result, _, _ = wrapped()
    model = result.model
    model.train()
    with torch.no_grad():  # move BatchNorm's running statistics away from their initial values
        for seed in range(3):
            model(randn(8, *INPUT, seed=seed).float())
    model.eval()
    images = torch.randn(5, *INPUT, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        logits = model(images)
    description = export_model(model, result.name, {**result.kwargs, "num_classes": 10, "in_chans": 1}, tmp_path)
    save_file({"images": images}, str(tmp_path / "images.safetensors"))
    # Only timm, our registry and safetensors: what a user of the exported files has.
    script = (
        "import json, sys, timm, students\n"
        "from safetensors.torch import load_file, save_file\n"
        "d = json.load(open(sys.argv[1]))\n"
        "m = timm.create_model(d['architecture'], **d['model_kwargs'])\n"
        "m.load_state_dict(load_file(sys.argv[2] + '/' + d['weights']), strict=True)\n"
        "x = load_file(sys.argv[2] + '/images.safetensors')['images']\n"
        "save_file({'logits': m.eval()(x).detach()}, sys.argv[2] + '/logits.safetensors')\n"
    )
    subprocess.run([sys.executable, "-c", script, str(description), str(tmp_path)], check=True)
    assert torch.equal(load_file(str(tmp_path / "logits.safetensors"))["logits"], logits)


@pytest.mark.parametrize(("overrides", "message"), [
    (["student=hinton_mlp_student"], r"student 'hinton_mlp_student'.forward_features gives shape \(800,\), not "
                                     r"\(channels, height, width\); choose a convolutional student"),
    (["teacher=hinton_mlp_teacher"], r"loss.simkd.teacher_layer='@-1' of teacher 'hinton_mlp_teacher' gives shape "
                                     r"\(1200,\).*set loss.simkd.teacher_layer to that layer"),
    (["loss.simkd.teacher_layer=stages.1"], r"teacher_layer='stages.1' of teacher 'small_cnn' gives shape "
                                            r"\(64, 4, 4\).*pooled 128 channels feed its classifier 'fc'"),
    (["scheme=ensemble"], r"no classifier \(get_classifier of TeacherEnsemble\).*not an ensemble"),
])
def test_bad_simkd_pairs_fail_before_training(make_cfg, overrides, message):
    cfg = make_cfg("loss=simkd", *overrides)
    with pytest.raises(ConfigError, match=message):
        prepare(cfg)
    assert not Path(cfg.paths.output_dir).exists()  # nothing trained, nothing written


def test_teacher_without_a_linear_classifier_is_named():
    student = create_model("small_cnn", 10, 1, {"width": 4})
    for teacher, found in ((create_model("small_cnn", 0, 1, {"width": 8}), "its classifier 'fc' is a Identity"),
                           (nn.Sequential(nn.Conv2d(1, 4, 3)), "it has no classifier (get_classifier of Sequential)")):
        with pytest.raises(ConfigError, match=re.escape(f"teacher 'net': {found}, not an nn.Linear")):
            reuse_teacher_classifier(student, "small_cnn", {}, teacher, "net", "@-1", 2, INPUT)


def test_simkd_run_exports_and_measures_the_deployed_network(make_cfg):
    cfg = make_cfg("loss=simkd", "trainer.max_epochs=1", "teacher.train.max_epochs=1")
    run(cfg)
    run_dir = Path(cfg.paths.output_dir)
    summary = json.loads((run_dir / "metrics.json").read_text())
    assert summary["student"]["architecture"] == "simkd(small_cnn + projector + small_cnn.fc)"
    assert "projector" in summary["student"]["note"] and "small_cnn.fc" in summary["student"]["note"]
    # The head is the teacher's classifier as trained in this run (its cached weights), never retrained.
    teacher_weights = load_file(str(Path(summary["teacher"]["cache_entry"]) / "teacher.safetensors"))
    model, description = load_exported(run_dir / "student.json")
    assert isinstance(model, SimKDStudent) and description["architecture"] == "simkd_student"
    assert torch.equal(model.head.weight, teacher_weights["fc.weight"])
    assert torch.equal(model.head.bias, teacher_weights["fc.bias"])
    # The reloaded network scores what the run tested.
    data = instantiate(cfg.data)
    data.setup("test")
    correct = total = 0
    with torch.no_grad():
        for images, targets, *_ in data.test_dataloader():
            correct += int((model(images).argmax(1) == targets).sum())
            total += len(targets)
    assert correct / total == pytest.approx(summary["metrics"]["test/acc_top1"], abs=1e-6)
    # The report measures backbone + projector + teacher classifier: params and MACs by hand.
    report = json.loads((run_dir / "report.json").read_text())
    student = next(m for m in report["models"] if m["role"] == "student")
    assert student["label"] == "student: simkd(small_cnn + projector + small_cnn.fc)"
    backbone = create_model("small_cnn", 10, 1, {"width": 8})
    backbone.reset_classifier(0)
    count = sum(p.numel() for p in backbone.parameters())
    c_s, c_t, hidden = 32, 128, 64  # student width 8 -> 32 channels; teacher width 32 -> 128, factor 2
    count += c_s * hidden + 2 * hidden + 9 * hidden * hidden + 2 * hidden + hidden * c_t + 2 * c_t  # convs + BNs
    count += c_t * 10 + 10
    assert student["params"] == count == summary["student"]["params"]
    backbone_macs = (8 * 8 * 1 * 8 * 9) + (4 * 4 * 8 * 16 * 9) + (2 * 2 * 16 * 32 * 9)  # three 3x3 convs
    projector_macs = 2 * 2 * (c_s * hidden + 9 * hidden * hidden + hidden * c_t)
    assert student["macs"] == backbone_macs + projector_macs + c_t * 10


def test_pruning_keeps_the_teacher_classifier_and_its_input_width():
    from distill.compress.prune import prune_to_macs

    result, _, teacher = wrapped()
    pruned, info = prune_to_macs(result.model, INPUT, 0.5, tolerance=0.2)
    assert pruned.projector[0].out_channels < result.model.projector[0].out_channels  # the bottleneck was cut
    assert pruned.projector[-3].out_channels == teacher.fc.in_features == 32
    assert torch.equal(pruned.head.weight, teacher.fc.weight) and torch.equal(pruned.head.bias, teacher.fc.bias)
