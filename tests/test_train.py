"""distill-train end to end on digits: teacher cache, resume, export, frozen teacher, wandb offline run."""

from __future__ import annotations

import csv
import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch
from hydra.utils import instantiate
from safetensors.torch import load_file

from distill.fit import fit_model, seed_everything
from distill.models import create_model
from distill.runner import run
from tests.helpers.wandb_records import logged_history


def csv_rows(cfg) -> list[dict[str, str]]:
    """The rows CSVLogger wrote for the run of ``cfg``."""
    with open(Path(cfg.paths.output_dir) / "csv" / "metrics.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def read_metrics(cfg) -> dict:
    return json.loads((Path(cfg.paths.output_dir) / "metrics.json").read_text())


def test_default_run_trains_the_teacher_once_then_reuses_it(make_cfg, caplog):
    quiet = ["logger=csv", "~callbacks.progress_bar", "trainer.enable_progress_bar=false"]
    first = make_cfg(*quiet, run="first", fast=False)
    run(first)
    summary = read_metrics(first)
    assert summary["teacher"]["trained_now"] is True
    assert summary["teacher"]["test_acc_top1"] >= 0.95
    assert summary["student"]["test_acc_top1"] >= 0.90
    assert summary["student"]["params"] < summary["teacher"]["params"] / 10
    run_dir = Path(first.paths.output_dir)
    for name in ("metrics.json", "student.json", "student.safetensors", "checkpoints/last.ckpt",
                 "checkpoints/best.ckpt", "teacher/checkpoints/last.ckpt", "report.md", "report.json",
                 "accuracy_vs_macs.png"):
        assert (run_dir / name).is_file(), name

    caplog.clear()
    with caplog.at_level(logging.INFO, logger="distill"):
        # The student's epochs and the report's repeats are not part of the teacher's key
        # (test_cache_key_follows_the_teacher_recipe): the second run is short, the reuse is what is tested.
        second = make_cfg(*quiet, "trainer.max_epochs=1", "report.repeats=3", "report.warmup=1", run="second",
                          fast=False)
        run(second)
    again = read_metrics(second)
    assert again["teacher"]["trained_now"] is False
    assert again["teacher"]["cache_key"] == summary["teacher"]["cache_key"]
    assert again["teacher"]["test_acc_top1"] == pytest.approx(summary["teacher"]["test_acc_top1"])
    assert not (Path(second.paths.output_dir) / "teacher").exists()
    assert "reused cached weights" in caplog.text


def test_config_check_leaves_a_teacher_to_train_trainable(make_cfg):
    from distill.runner import prepare

    plan = prepare(make_cfg())
    assert plan.teacher.training
    assert all(p.requires_grad for p in plan.teacher.parameters())
    assert all(len(m._forward_hooks) == 0 for m in plan.teacher.modules())


def test_cache_key_follows_the_teacher_recipe(make_cfg):
    from distill.teacher.weights_cache import teacher_cache_key

    base = teacher_cache_key(make_cfg())
    assert teacher_cache_key(make_cfg("student=cifar_resnet8", "trainer.max_epochs=9")) == base
    assert teacher_cache_key(make_cfg("data.num_workers=2")) == base
    assert teacher_cache_key(make_cfg("teacher.train.max_epochs=3")) != base
    assert teacher_cache_key(make_cfg("seed=1")) == base  # a seed sweep of students shares the teacher
    assert teacher_cache_key(make_cfg("teacher.train.seed=1")) != base
    assert teacher_cache_key(make_cfg("data.image_size=16")) != base
    assert teacher_cache_key(make_cfg("trainer.fast_dev_run=true")) != base


def test_exported_student_rebuilds_with_plain_timm_and_scores_the_same(make_cfg):
    cfg = make_cfg()
    run(cfg)
    run_dir = Path(cfg.paths.output_dir)
    description = json.loads((run_dir / "student.json").read_text())
    import students  # noqa: F401  (what the export's "imports" says to import)

    model = timm.create_model(description["architecture"], **description["model_kwargs"])
    model.load_state_dict(load_file(str(run_dir / description["weights"])))
    model.eval()
    data = instantiate(cfg.data)
    data.setup()
    test = data.splits["test"]
    with torch.no_grad():
        accuracy = (model(test.images).argmax(1) == test.labels).float().mean().item()
    assert accuracy == pytest.approx(read_metrics(cfg)["student"]["test_acc_top1"], abs=1e-6)


def test_last_checkpoint_is_the_newest_state_and_a_resume_trains_exactly_the_epochs_asked_for(make_cfg):
    # mode=min on accuracy makes the "best" epoch an early one: last.ckpt must still be the final state.
    first = make_cfg("trainer.max_epochs=3", "callbacks.model_checkpoint.mode=min", run="first")
    run(first)
    folder = Path(first.paths.output_dir) / "checkpoints"
    assert sorted(p.name for p in folder.iterdir()) == ["best.ckpt", "last.ckpt"]  # one writer of "last"
    best = torch.load(folder / "best.ckpt", weights_only=True)
    before = torch.load(folder / "last.ckpt", weights_only=True)
    assert best["epoch"] < 2, "the setting must put the best epoch before the last one"
    assert before["epoch"] == 2 and before["global_step"] % 3 == 0
    assert not any(key.startswith("teacher.") for key in before["state_dict"])

    resumed = make_cfg("trainer.max_epochs=5", f"ckpt_path={folder / 'last.ckpt'}", run="resumed")
    run(resumed)
    after = torch.load(Path(resumed.paths.output_dir) / "checkpoints" / "last.ckpt", weights_only=True)
    steps_per_epoch = before["global_step"] // 3
    assert after["epoch"] == 4
    assert after["global_step"] == before["global_step"] + 2 * steps_per_epoch  # epochs 3 and 4, nothing again
    trained = {int(row["epoch"]) for row in csv_rows(resumed) if row.get("train/loss_epoch")}
    assert trained == {3, 4}


def test_teacher_outputs_and_batchnorm_buffers_are_bit_identical_after_distillation(make_cfg):
    cfg = make_cfg("teacher.kwargs.width=8", "trainer.max_epochs=2")
    data = instantiate(cfg.data)
    data.setup()
    seed_everything(0)
    teacher = create_model("small_cnn", 10, 1, {"width": 8})
    teacher.train()
    with torch.no_grad():  # move BN statistics away from their init, as a trained teacher's are
        for _ in range(3):
            teacher(data.splits["train"].images[:128])
    teacher.eval()
    probe = data.splits["test"].images[:64]
    with torch.no_grad():
        outputs_before = teacher(probe).clone()
    state_before = {k: v.clone() for k, v in teacher.state_dict().items()}

    student = create_model("small_cnn", 10, 1, {"width": 4})
    result = fit_model(cfg, student, data, cfg.loss, cfg.optimizer, cfg.scheduler, teacher=teacher)
    assert result.metrics["test/teacher_acc_top1"] >= 0.0

    assert all(torch.equal(state_before[k], v) for k, v in teacher.state_dict().items())
    assert not teacher.training
    assert all(not p.requires_grad for p in teacher.parameters())
    with torch.no_grad():
        assert torch.equal(teacher(probe), outputs_before)


def test_stage_teacher_and_stage_student_share_the_same_training_code(make_cfg):
    teacher_cfg = make_cfg("stage=teacher", run="teacher")
    run(teacher_cfg)
    summary = read_metrics(teacher_cfg)
    assert summary["teacher"]["trained_now"] is True
    assert (Path(teacher_cfg.paths.output_dir) / "teacher.json").is_file()
    # The distillation run then finds that teacher in the cache.
    distill_cfg = make_cfg(run="distill")
    run(distill_cfg)
    assert read_metrics(distill_cfg)["teacher"]["trained_now"] is False

    baseline = make_cfg("stage=student", run="baseline")
    run(baseline)
    summary = read_metrics(baseline)
    assert "teacher" not in summary
    assert set(k.split("/")[-1] for k in summary["metrics"] if k.startswith("test/")) == {"acc_top1", "acc_top5", "ce"}


def test_teacher_from_a_weights_file_is_used_as_is(make_cfg):
    source = make_cfg("stage=teacher", run="teacher")
    run(source)
    teacher_json = Path(source.paths.output_dir) / "teacher.json"
    cfg = make_cfg(f"teacher.weights={teacher_json}", "paths.cache_dir=/nonexistent/never-used", run="from_file")
    run(cfg)
    summary = read_metrics(cfg)
    assert summary["teacher"]["source"] == "weights file"
    assert summary["teacher"]["test_acc_top1"] == pytest.approx(read_metrics(source)["teacher"]["test_acc_top1"])


def test_wandb_offline_run_holds_the_logged_metrics(make_cfg):
    cfg = make_cfg("logger=wandb", "teacher.weights=null")
    run(cfg)
    summary = read_metrics(cfg)
    run_dir = Path(cfg.paths.output_dir)
    # Both dashboard runs are listed for upload, the teacher's (trained in this run) first.
    teacher_sync, student_sync = summary["wandb_sync"]
    assert teacher_sync.startswith(f"wandb sync {run_dir / 'teacher' / 'wandb'}")
    assert student_sync.startswith(f"wandb sync {run_dir / 'wandb'}")
    # The teacher trained first, in its own dashboard run, then the student's run.
    assert len(list((run_dir / "teacher" / "wandb").glob("offline-run-*"))) == 1
    assert len(list((run_dir / "wandb").glob("offline-run-*"))) == 1
    history = logged_history(Path(student_sync.split(" ", 2)[2]))
    assert history["test/acc_top1"][-1] == pytest.approx(summary["student"]["test_acc_top1"])
    assert history["test/teacher_acc_top1"][-1] == pytest.approx(summary["teacher"]["test_acc_top1"])
    assert "train/loss/kd" in history and "train/loss/ce" in history


def test_cli_runs_from_any_folder_and_reports_bad_input_cleanly(tmp_path):
    command = [sys.executable, "-m", "distill.train", "student.name=cifar_resnet8x5", "logger=none",
               f"paths.log_dir={tmp_path}", f"paths.cache_dir={tmp_path / 'cache'}"]
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "unknown student model 'cifar_resnet8x5'" in result.stdout + result.stderr
    assert "cifar_resnet8x4" in result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
