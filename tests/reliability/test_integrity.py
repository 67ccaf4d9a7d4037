"""Damaged files are found when they are read, with a clear message or a rebuild, never a crash deep in torch;
two sweeps started together on an empty cache train their teacher once."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from distill.errors import ConfigError
from distill.reliability.resume import auto_resume_checkpoint, check_checkpoint
from distill.runner import prepare, run
from scripts.bad_inputs.image_folders import make_image_folder

ROOT = Path(__file__).resolve().parents[2]


def read_metrics(cfg) -> dict:
    return json.loads((Path(cfg.paths.output_dir) / "metrics.json").read_text())


@pytest.fixture
def good_checkpoint(tmp_path) -> Path:
    path = tmp_path / "checkpoints" / "last.ckpt"
    path.parent.mkdir()
    torch.save({"state_dict": {"w": torch.ones(1000)}, "epoch": 0, "global_step": 5, "loops": {}}, path)
    check_checkpoint(path)  # a complete one passes
    return path


def test_truncated_checkpoint_fails_in_prepare_with_the_fix(make_cfg, good_checkpoint):
    data = good_checkpoint.read_bytes()
    good_checkpoint.write_bytes(data[: len(data) // 2])  # what a copy cut short leaves
    with pytest.raises(ConfigError, match=r"is not a readable checkpoint \(truncated or corrupt file\).*best.ckpt"):
        prepare(make_cfg(f"ckpt_path={good_checkpoint}"))


def test_corrupted_checkpoint_bytes_fail_with_the_reason(good_checkpoint):
    data = bytearray(good_checkpoint.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 4000] = b"\xff" * 4000  # flipped bytes inside the archive's data
    good_checkpoint.write_bytes(bytes(data))
    with pytest.raises(ConfigError, match="is not a readable checkpoint"):
        check_checkpoint(good_checkpoint)


def test_a_weights_file_is_not_a_training_checkpoint(tmp_path):
    path = tmp_path / "weights.pth"
    torch.save({"fc.weight": torch.ones(2, 2)}, path)
    with pytest.raises(ConfigError, match="not a Lightning training checkpoint .*give a run's checkpoints/last.ckpt"):
        check_checkpoint(path)


def test_resume_auto_starts_over_from_a_damaged_last_checkpoint(good_checkpoint, caplog):
    run_dir = good_checkpoint.parent.parent
    assert auto_resume_checkpoint(run_dir) == str(good_checkpoint)
    good_checkpoint.write_bytes(b"PK\x03\x04 not really")
    with caplog.at_level(logging.WARNING, logger="distill"):
        assert auto_resume_checkpoint(run_dir) is None
    assert "starting over" in caplog.text


SHORT = ["teacher.train.max_epochs=1", "trainer.max_epochs=1", "trainer.limit_train_batches=3", "report.enabled=false"]


def test_damaged_teacher_cache_entry_is_trained_again(make_cfg, caplog):
    first = make_cfg(*SHORT, run="first")
    run(first)
    entry = Path(read_metrics(first)["teacher"]["cache_entry"])
    weights = entry / "teacher.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with caplog.at_level(logging.WARNING, logger="distill"):
        second = make_cfg(*SHORT, "teacher_cache.runs_sharing=100", run="second")
        run(second)
    assert "is unreadable" in caplog.text and "training it again" in caplog.text
    assert read_metrics(second)["teacher"]["trained_now"] is True
    assert (entry.parent / f".{entry.name}.broken").is_dir()  # kept aside, for a look
    third = make_cfg(*SHORT, run="third")
    run(third)
    assert read_metrics(third)["teacher"]["trained_now"] is False  # the new entry is whole


def test_damaged_teacher_output_cache_entry_is_computed_again(make_cfg, caplog):
    first = make_cfg(*SHORT, "teacher_cache.runs_sharing=100", run="first")  # short runs: the build is declared
    run(first)
    folders = list((Path(first.paths.cache_dir) / "teacher_outputs").glob("[!.]*[!k]"))
    assert len(folders) == 1
    array = folders[0] / "train.logits.npy"
    array.write_bytes(array.read_bytes()[:200])
    with caplog.at_level(logging.INFO, logger="distill"):
        second = make_cfg(*SHORT, "teacher_cache.runs_sharing=100", run="second")
        run(second)
    assert "is damaged" in caplog.text and "computing it again" in caplog.text
    assert read_metrics(second)["student"]["test_acc_top1"] == pytest.approx(
        read_metrics(first)["student"]["test_acc_top1"])


IMAGE_FOLDER = ["data=image_folder", "data.image_size=16", "data.batch_size=4", "data.eval_batch_size=4",
                "data.num_workers=0", "teacher.train.max_epochs=1", "trainer.max_epochs=1", "report.enabled=false"]


def test_unreadable_image_fails_before_training_with_the_files_named(make_cfg, tmp_path):
    make_image_folder(tmp_path / "images", bad=2)
    with pytest.raises(ConfigError, match=r"2 unreadable image\(s\) in .*train \(first: .*broken0.jpg.*"
                                          r"data.on_bad_image=skip"):
        prepare(make_cfg(*IMAGE_FOLDER, f"data.root={tmp_path / 'images'}"))


def test_unreadable_images_are_skipped_and_counted_on_request(make_cfg, tmp_path):
    make_image_folder(tmp_path / "images", bad=2)
    cfg = make_cfg(*IMAGE_FOLDER, f"data.root={tmp_path / 'images'}", "data.on_bad_image=skip")
    run(cfg)
    skipped = read_metrics(cfg)["skipped_images"]
    assert [Path(p).name for p in skipped["train"]] == ["broken0.jpg", "broken1.jpg"]


def test_an_image_folder_tests_on_test_when_present_and_says_so_when_it_tests_on_val(make_cfg, tmp_path, caplog):
    from distill.data import ImageFolderDataModule

    make_image_folder(tmp_path / "three", splits=("train", "val", "test"))
    make_image_folder(tmp_path / "two")
    assert ImageFolderDataModule(root=str(tmp_path / "three")).dirs["test"] == "test"
    assert not ImageFolderDataModule(root=str(tmp_path / "three")).test_is_validation

    cfg = make_cfg(*IMAGE_FOLDER, f"data.root={tmp_path / 'two'}")
    with caplog.at_level("WARNING", logger="distill"):
        run(cfg)
    assert "the validation split that also picks the best checkpoint" in caplog.text
    assert read_metrics(cfg)["warnings"] == ["test split = validation split (it picked the best checkpoint): test "
                                             "top-1 is optimistic; add a test/ folder"]
    caplog.clear()
    with_test = make_cfg(*IMAGE_FOLDER, f"data.root={tmp_path / 'three'}", run="three")
    with caplog.at_level("WARNING", logger="distill"):
        run(with_test)
    assert "picks the best checkpoint" not in caplog.text and "warnings" not in read_metrics(with_test)


def test_image_folder_loader_settings_follow_the_machine(make_cfg, tmp_path, monkeypatch):
    from hydra.utils import instantiate

    make_image_folder(tmp_path / "images", bad=0)
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    data = instantiate(make_cfg("data=image_folder", f"data.root={tmp_path / 'images'}").data)
    assert data.num_workers == 1 and data.pin_memory == torch.cuda.is_available()


@pytest.mark.slow  # two sweeps of two jobs each: about a minute on 2 cores
def test_two_sweeps_started_together_on_an_empty_cache_train_the_teacher_once(tmp_path):
    def sweep(name: str) -> subprocess.Popen:
        command = [sys.executable, "-m", "distill.train", "-m", "seed=0,1", "teacher=small_cnn",
                   "teacher.train.max_epochs=1", "student=small_cnn", "trainer.max_epochs=1", "logger=csv",
                   "callbacks.progress_bar=null", "report.enabled=false", "trainer.limit_train_batches=3",
                   f"paths.cache_dir={tmp_path / 'cache'}", f"hydra.sweep.dir={tmp_path / name}"]
        return subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    processes = [sweep("a"), sweep("b")]
    outputs = [process.communicate(timeout=300)[0] for process in processes]
    assert all(process.returncode == 0 for process in processes), outputs[0][-2000:] + outputs[1][-2000:]
    summaries = [json.loads(path.read_text()) for path in sorted(tmp_path.glob("[ab]/*/metrics.json"))]
    assert len(summaries) == 4
    assert sum(summary["teacher"]["trained_now"] for summary in summaries) == 1
    assert len({summary["teacher"]["cache_key"] for summary in summaries}) == 1


def test_a_run_that_would_learn_nothing_is_refused(make_cfg, tmp_path):
    with pytest.raises(ConfigError, match=r"every term of loss has weight 0 \(loss.ce.weight=0, loss.kd.weight=0\)"):
        prepare(make_cfg("loss.ce.weight=0", "loss.kd.weight=0"))
    with pytest.raises(ConfigError, match=r"every term of teacher.train.loss has weight 0"):
        prepare(make_cfg("stage=teacher", "teacher.train.loss.ce.weight=0"))
    prepare(make_cfg("stage=student", "loss.kd.weight=0"))  # the baseline trains on CE at weight 1
    from distill.runner import baseline_loss

    with pytest.raises(ConfigError, match=r"stage=student trains on cross-entropy alone and loss.ce.weight=0"):
        baseline_loss(make_cfg("stage=student", "loss.ce.weight=0").loss, ["loss.ce.weight=0"])


def test_a_teacher_trained_for_zero_steps_never_enters_the_cache(make_cfg):
    cfg = make_cfg("trainer.limit_train_batches=0")
    with pytest.raises(ConfigError, match=r"teacher small_cnn trained for 0 optimizer steps"):
        run(cfg)
    assert not list((Path(cfg.paths.cache_dir) / "teachers").glob("*/teacher.json"))


def test_sigterm_during_the_report_says_so_and_the_run_resumes(make_cfg, monkeypatch):
    import os
    import signal

    import distill.runner
    from distill.errors import InterruptedAfterTraining

    real_report = distill.runner.efficiency_report

    def stopped_report(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)  # the scheduler's stop arrives while the report is measured
        return real_report(*args, **kwargs)

    monkeypatch.setattr(distill.runner, "efficiency_report", stopped_report)
    previous = signal.signal(signal.SIGTERM, signal.SIG_DFL)  # as in a distill-train process after its fit
    try:
        cfg = make_cfg("trainer.max_epochs=1", run="stopped")
        expected = r"stopped by SIGTERM during the export and the efficiency report, after training finished"
        with pytest.raises(InterruptedAfterTraining, match=expected + r" \(checkpoint: .*last.ckpt"):
            run(cfg)
    finally:
        signal.signal(signal.SIGTERM, previous)
    folder = Path(cfg.paths.output_dir)
    assert not (folder / "metrics.json").exists() and (folder / "checkpoints" / "last.ckpt").is_file()
    monkeypatch.setattr(distill.runner, "efficiency_report", real_report)
    resumed = make_cfg("trainer.max_epochs=1", f"ckpt_path={folder / 'checkpoints' / 'last.ckpt'}", run="resumed")
    run(resumed)
    assert read_metrics(resumed)["student"]["test_acc_top1"] is not None
