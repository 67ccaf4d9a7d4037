"""Cached teacher outputs: same loss as the live teacher, invalidated by any change, used only when valid."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from hydra.utils import instantiate

from distill.config import to_dict
from distill.losses import build_loss_terms
from distill.models import create_model
from distill.module import DistillationModule
from distill.runner import cached_teacher_outputs
from distill.teacher.logits_cache import load_or_compute, teacher_logits, teacher_outputs_key
from distill.teacher.stored_logits import top_k_pseudo_logits
from tests.conftest import FAST


@pytest.fixture
def digits(make_cfg):
    cfg = make_cfg()
    data = instantiate(cfg.data)
    data.setup()
    return cfg, data


def trained_like_teacher() -> torch.nn.Module:
    torch.manual_seed(0)
    teacher = create_model("small_cnn", 10, 1, {"width": 8})
    with torch.no_grad():  # non-trivial BN statistics and larger logits, as a trained teacher has
        for module in teacher.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
        teacher.fc.weight.mul_(20)
    return teacher.eval()


def test_cached_and_live_teacher_give_the_same_loss(digits, tmp_path):
    cfg, data = digits
    teacher = trained_like_teacher()
    splits = {name: split.images for name, split in data.splits.items()}
    key = teacher_outputs_key(teacher, dict(cfg.data), "digits", None, None)
    outputs = load_or_compute(tmp_path, key, teacher, splits, 10, None, None, memory_mapped=True)

    def module(cached):
        student = create_model("small_cnn", 10, 1, {"width": 4})
        torch.manual_seed(1)
        terms = build_loss_terms({"ce": {"weight": 0.1}, "kd": {"weight": 0.9, "temperature": 4.0}})
        return DistillationModule(student, terms, lambda params: torch.optim.SGD(params, lr=0.1), 10, (1, 8, 8),
                                  teacher=teacher, teacher_outputs=cached)

    torch.manual_seed(2)
    live, cached = module(None), module(outputs)
    cached.student.load_state_dict(live.student.state_dict())
    indices = torch.tensor([5, 17, 3, 900, 42, 0, 1200, 77])
    batch = (data.splits["train"].images[indices], data.splits["train"].labels[indices], indices)
    live_loss, cached_loss = live.training_step(batch, 0), cached.training_step(batch, 0)
    assert live_loss.item() > 0
    assert cached_loss.item() == pytest.approx(live_loss.item(), rel=2e-3)
    # The looked-up rows are the teacher's logits for exactly those samples, to fp16 precision.
    with torch.no_grad():
        expected = teacher(batch[0])
    assert torch.allclose(outputs.lookup("train", indices), expected, atol=2e-2, rtol=1e-3)
    in_memory = load_or_compute(tmp_path, key, teacher, splits, 10, None, None, memory_mapped=False)
    assert torch.equal(in_memory.lookup("train", indices), outputs.lookup("train", indices))


def test_a_build_removes_what_a_killed_build_of_the_same_key_left(digits, tmp_path):
    cfg, data = digits
    teacher = trained_like_teacher()
    key = teacher_outputs_key(teacher, dict(cfg.data), "digits", None, None)
    root = tmp_path / "teacher_outputs"
    (root / f".{key}.abc123").mkdir(parents=True)  # what tempfile.mkdtemp made before the kill
    (root / f".{key}.abc123" / "train_logits.npy").write_bytes(b"partial")
    (root / ".0123456789abcdef.xyz").mkdir()  # another key's build, maybe running: not touched
    outputs = load_or_compute(tmp_path, key, teacher, {"train": data.splits["train"].images[:64]}, 10, None, None,
                              memory_mapped=False)
    assert outputs.lookup("train", torch.tensor([0, 63])).shape == (2, 10)
    assert sorted(p.name for p in root.iterdir()) == [".0123456789abcdef.xyz", key, f"{key}.lock"]


def test_sigterm_during_a_build_leaves_no_staging_folder(digits, tmp_path):
    import os
    import signal

    cfg, data = digits
    teacher = trained_like_teacher()
    key = teacher_outputs_key(teacher, dict(cfg.data), "digits", None, None)

    class Stopped(torch.nn.Module):  # the build is under way (staging exists) when the scheduler stops the job
        def __init__(self) -> None:
            super().__init__()
            self.teacher = teacher

        def forward(self, images):
            os.kill(os.getpid(), signal.SIGTERM)
            return self.teacher(images)

    previous = signal.getsignal(signal.SIGTERM)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # as in a distill-train process before Lightning's fit
    try:
        with pytest.raises(SystemExit) as stopped:
            load_or_compute(tmp_path, key, Stopped(), {"train": data.splits["train"].images[:64]}, 10, None, None,
                            memory_mapped=False)
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert stopped.value.code == 128 + signal.SIGTERM
    assert sorted(p.name for p in (tmp_path / "teacher_outputs").iterdir()) == [f"{key}.lock"]


def test_a_build_keeps_no_autograd_graph():
    """50 variants x 55,000 images: outputs that held their graphs would cost memory and time for nothing."""
    logits = teacher_logits(trained_like_teacher(), torch.randn(600, 1, 8, 8), batch_size=256)
    assert logits.shape == (600, 10) and not logits.requires_grad and logits.grad_fn is None


def test_top_k_keeps_the_largest_probabilities_and_spreads_the_rest():
    logits = torch.tensor([[4.0, 1.0, 0.0, -1.0, 2.0]])
    temperature = 2.0
    probabilities = F.softmax(logits / temperature, dim=1)
    values, indices = probabilities.topk(2, dim=1)
    rest = 1 - values.sum(1)
    pseudo = top_k_pseudo_logits(values, indices, rest, 5, temperature)
    rebuilt = F.softmax(pseudo / temperature, dim=1)
    assert torch.allclose(rebuilt[0, [0, 4]], probabilities[0, [0, 4]], atol=1e-6)
    assert torch.allclose(rebuilt[0, [1, 2, 3]], rest.expand(3) / 3, atol=1e-6)


def test_key_changes_with_teacher_weights_and_transforms(make_cfg):
    cfg = make_cfg()
    teacher = trained_like_teacher()
    base = teacher_outputs_key(teacher, dict(cfg.data), "digits", None, None)
    assert teacher_outputs_key(teacher, dict(cfg.data), "digits", None, None) == base
    assert teacher_outputs_key(teacher, {**cfg.data, "num_workers": 3}, "digits", None, None) == base
    for change in ({"image_size": 16}, {"mean": [0.5]}, {"random_crop_padding": 1}, {"split_seed": 1}):
        assert teacher_outputs_key(teacher, {**cfg.data, **change}, "digits", None, None) != base, change
    assert teacher_outputs_key(teacher, dict(cfg.data), "digits", 3, 4.0) != base
    with torch.no_grad():
        teacher.fc.bias[0] += 1e-3
    assert teacher_outputs_key(teacher, dict(cfg.data), "digits", None, None) != base


def test_cache_is_not_used_where_it_would_be_stale(make_cfg, caplog):
    teacher = trained_like_teacher()
    for overrides, reason in (
        (["data.random_crop_padding=1", "teacher_cache.augmentations=false"], "teacher_cache.augmentations=false"),
        (["data.random_crop_padding=8", "data.horizontal_flip=true"], "makes 578 variants of each image, more "
                                                                      "than teacher_cache.max_variants=256"),
        (["loss=fitnet"], "read teacher features"),
    ):
        cfg = make_cfg(*overrides)
        data = instantiate(cfg.data)
        caplog.clear()
        with caplog.at_level("INFO", logger="distill"):
            assert cached_teacher_outputs(cfg, teacher, data, build_loss_terms(to_dict(cfg.loss))) is None
        assert reason in caplog.text and "teacher runs live" in caplog.text
    cfg = make_cfg("teacher_cache.top_k=3")
    outputs = cached_teacher_outputs(cfg, teacher, instantiate(cfg.data), build_loss_terms(to_dict(cfg.loss)))
    assert outputs is not None and outputs.meta["top_k"] == 3 and outputs.meta["temperature"] == 4.0


def test_ddp_with_two_cpu_processes(tmp_path):
    command = [sys.executable, "-m", "distill.train", *FAST, "trainer=ddp", "trainer.fast_dev_run=true",
               "teacher_cache.augmentations=true", "teacher_cache.runs_sharing=100",  # the cache is built
               f"paths.cache_dir={tmp_path / 'cache'}", f"hydra.run.dir={tmp_path / 'run'}"]
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert "GLOBAL_RANK: 1, MEMBER: 2/2" in output
    summary = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert summary["teacher"]["trained_now"] is True
    assert summary["student"]["test_acc_top1"] is not None
    # The teacher was trained once (by both ranks together) and published once.
    assert len(list((tmp_path / "cache" / "teachers").glob("*/teacher.json"))) == 1
    assert len(list((tmp_path / "cache" / "teacher_outputs").glob("*/meta.json"))) == 1


def test_top_k_storage_uses_the_kd_temperature_not_the_contrast_temperature_of_crd():
    from distill.losses import build_loss_terms
    from distill.teacher.logits_cache import softmax_temperature

    terms = build_loss_terms({"ce": {"weight": 1.0}, "crd": {"weight": 0.8, "temperature": 0.07},
                              "kd": {"weight": 1.0, "temperature": 4.0}})
    assert softmax_temperature(terms) == 4.0  # CRD's 0.07 scales contrast scores, not class probabilities
    assert softmax_temperature(build_loss_terms({"ce": {"weight": 1.0}, "ctkd": {}})) is None  # learned, not fixed
