"""The divergence guard: a non-finite loss stops the run at that step (or skips the batch), never trains on it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import torch
from hydra.utils import instantiate

from distill.losses import build_loss_terms
from distill.models import create_model
from distill.module import DistillationModule

ROOT = Path(__file__).resolve().parents[2]


def test_an_overflowing_loss_weight_stops_the_run_with_the_term_step_and_epoch(tmp_path):
    # FitNet at weight 1e6 (inside the allowed range): the hint regression blows up within a few steps until
    # the term overflows fp32 (epoch 0, step 4 on digits).
    command = [sys.executable, "-m", "distill.train", "teacher=small_cnn", "teacher.train.max_epochs=1",
               "student=small_cnn", "loss=fitnet", "loss.fitnet.weight=1e6", "trainer.max_epochs=3", "logger=csv",
               "callbacks.progress_bar=null", "trainer.enable_progress_bar=false", "report.enabled=false",
               "callbacks.last_checkpoint.every_n_train_steps=1", f"hydra.run.dir={tmp_path / 'run'}",
               f"paths.cache_dir={tmp_path / 'cache'}"]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    output = result.stdout + result.stderr
    assert result.returncode == 3, output[-3000:]
    assert "Traceback" not in output
    line = next(line for line in output.splitlines() if "non-finite loss:" in line)
    step = int(line.split(", step ")[1].split(";")[0])
    assert "term 'fitnet' = " in line or "the weighted total = " in line
    assert "at epoch " in line and "guard.on_non_finite=skip" in line
    error = json.loads((tmp_path / "run" / "error.json").read_text())
    assert error["error"].startswith("DivergenceError")

    last = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["global_step"] == step  # the last step that was applied: the one before the overflow
    assert all(torch.isfinite(value).all() for value in last["state_dict"].values() if value.is_floating_point())


def test_skip_mode_skips_the_non_finite_batch_and_counts_it(make_cfg):
    cfg = make_cfg()
    data = instantiate(cfg.data)
    student, teacher = create_model("small_cnn", 10, 1, {"width": 4}), create_model("small_cnn", 10, 1, {"width": 4})
    module = DistillationModule(student=student, teacher=teacher,
                                loss_terms=build_loss_terms({"ce": {"weight": 0.1}, "kd": {"weight": 0.9}}),
                                optimizer=instantiate(cfg.optimizer), num_classes=10,
                                input_shape=data.input_shape, on_non_finite="skip", max_skipped_batches=5)
    images = torch.randn(4, *data.input_shape)
    targets = torch.tensor([0, 1, 2, 3])
    assert module.training_step((images, targets), 0) is not None
    images[1, 0, 0, 0] = float("inf")  # one poisoned image: its logits, so the batch loss, are not finite
    assert module.training_step((images, targets), 1) is None  # Lightning skips backward and the step
    assert module.skipped_batches == 1
    checkpoint = {"state_dict": {}}
    module.on_save_checkpoint(checkpoint)
    assert checkpoint["skipped_batches"] == 1
