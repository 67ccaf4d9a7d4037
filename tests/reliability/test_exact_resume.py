"""Exact resume: a training process killed mid-epoch (SIGKILL) or stopped (SIGTERM), then resumed from its
``last.ckpt``, ends with the same weights, bit for bit, as the run that was never interrupted.

Real subprocesses of ``python -m distill.train``; a dropout student and random crops + flips, so the RNG
streams, the data order and the mid-epoch position all have to be restored for the weights to agree.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
# digits: 1,293 training images, batch 64 -> 21 batches per epoch, 42 steps in 2 epochs; a checkpoint every
# 3 steps, so the last one is the final state.
CONFIG = [
    "teacher=small_cnn", "teacher.train.max_epochs=1", "student=hinton_mlp_student", "+student.kwargs.hidden=64",
    "+student.kwargs.drop_rate=0.2", "data.random_crop_padding=1", "data.horizontal_flip=true",
    "trainer.max_epochs=2", "trainer.deterministic=true", "callbacks.last_checkpoint.every_n_train_steps=3",
    "logger=csv", "callbacks.progress_bar=null", "trainer.enable_progress_bar=false", "report.enabled=false",
]


def train(run_dir: Path, cache: Path, *overrides: str, multirun: bool = False) -> subprocess.CompletedProcess:
    where = [f"hydra.sweep.dir={run_dir}"] if multirun else [f"hydra.run.dir={run_dir}"]
    command = [sys.executable, "-m", "distill.train", *(["-m"] if multirun else []), *CONFIG,
               f"paths.cache_dir={cache}", *where, *overrides]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)


def final_state(checkpoint: Path) -> dict[str, torch.Tensor]:
    state = torch.load(checkpoint, weights_only=True)
    assert state["global_step"] == 42, state["global_step"]  # all 2 x 21 steps trained
    return state["state_dict"]


def assert_identical(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    different = [name for name in a if not torch.equal(a[name], b[name])]
    assert not different, f"weights differ after resume: {different}"


def assert_resumes_exactly(last: Path, cache: Path, run_dir: Path, expected: dict[str, torch.Tensor]) -> None:
    resumed = train(run_dir, cache, f"ckpt_path={last}")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_identical(final_state(run_dir / "checkpoints" / "last.ckpt"), expected)


def kill_at(signal_name: str, epoch: int, batch: int, seed: int | None = None) -> list[str]:
    return ["+callbacks.kill._target_=scripts.bad_inputs.process_signals.SignalAtBatch",
            f"+callbacks.kill.signal_name={signal_name}", f"+callbacks.kill.epoch={epoch}",
            f"+callbacks.kill.batch={batch}",
            *([f"+callbacks.kill.seed={seed}"] if seed is not None else [])]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> tuple[dict[str, torch.Tensor], Path]:
    root = tmp_path_factory.mktemp("exact_resume")
    result = train(root / "whole", root / "cache")
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((root / "whole" / "metrics.json").read_text())
    assert summary["seconds_earlier_calls"] == 0 and summary["seconds"] == summary["seconds_this_call"] > 0
    return final_state(root / "whole" / "checkpoints" / "last.ckpt"), root / "cache"


def test_sigkill_mid_epoch_then_resume_gives_the_uninterrupted_weights(uninterrupted, tmp_path):
    expected, cache = uninterrupted
    run_dir = tmp_path / "killed"
    killed = train(run_dir, cache, *kill_at("SIGKILL", epoch=1, batch=8))
    assert killed.returncode == -9  # killed by the signal, no clean-up of any kind ran
    last = run_dir / "checkpoints" / "last.ckpt"
    saved = torch.load(last, weights_only=True)
    assert saved["global_step"] == 27  # the step-27 checkpoint, 6 batches into epoch 1

    assert_resumes_exactly(last, cache, tmp_path / "resumed", expected)
    # The resumed run's time counts the killed call's training up to its checkpoint, which the checkpoint kept.
    killed_seconds = saved["callbacks"]["Timer"]["time_elapsed"]["train"]
    summary = json.loads((tmp_path / "resumed" / "metrics.json").read_text())
    assert killed_seconds > 0 and summary["seconds_earlier_calls"] == pytest.approx(killed_seconds)
    assert summary["seconds"] == pytest.approx(summary["seconds_this_call"] + killed_seconds)


def test_sigterm_writes_a_checkpoint_and_prints_the_resume_command(uninterrupted, tmp_path):
    # The checkpoint is written where step checkpoints are (on_train_batch_end), so resuming from it is the
    # SIGKILL test's resume; the resume itself is checked in the slow variant below.
    _, cache = uninterrupted
    run_dir = tmp_path / "stopped"
    stopped = train(run_dir, cache, *kill_at("SIGTERM", epoch=1, batch=8))
    output = stopped.stdout + stopped.stderr
    assert stopped.returncode == 143, output[-3000:]  # 128 + SIGTERM, the shell's convention
    assert "stopped by SIGTERM at epoch 1, step 30" in output
    assert "Traceback" not in output
    last = run_dir / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["global_step"] == 30  # the batch in progress finished first
    command = next(line for line in output.splitlines() if "resume with: distill-train" in line)
    assert f"ckpt_path={last}" in command
    assert json.loads((run_dir / "error.json").read_text())["error"].startswith("RunInterrupted")


@pytest.mark.slow  # two more subprocesses: ~30 s
def test_a_run_stopped_by_sigterm_resumes_to_the_uninterrupted_weights(uninterrupted, tmp_path):
    expected, cache = uninterrupted
    stopped = train(tmp_path / "stopped", cache, *kill_at("SIGTERM", epoch=1, batch=8))
    assert stopped.returncode == 143
    assert_resumes_exactly(tmp_path / "stopped" / "checkpoints" / "last.ckpt", cache, tmp_path / "resumed", expected)


@pytest.mark.slow  # a sweep killed, then run again: about a minute on 2 cores
def test_a_killed_sweep_run_again_with_resume_auto_skips_finished_jobs(uninterrupted, tmp_path):
    _, cache = uninterrupted
    sweep = tmp_path / "sweep"
    killed = train(sweep, cache, "seed=0,1", *kill_at("SIGKILL", epoch=1, batch=3, seed=1), multirun=True)
    assert killed.returncode == -9
    finished = sweep / "0" / "metrics.json"
    first_summary = finished.read_text()
    assert not (sweep / "1" / "metrics.json").exists() and (sweep / "1" / "checkpoints" / "last.ckpt").is_file()

    again = train(sweep, cache, "seed=0,1", "resume=auto", multirun=True)
    output = again.stdout + again.stderr
    assert again.returncode == 0, output[-3000:]
    assert "finished before (metrics.json); not run again" in output
    assert "continuing the unfinished run from" in output
    assert finished.read_text() == first_summary
    assert json.loads((sweep / "1" / "metrics.json").read_text())["student"]["test_acc_top1"] is not None
    final_state(sweep / "1" / "checkpoints" / "last.ckpt")  # trained to the end
    # The resumed run's learning curve has the epochs before its checkpoint too, each step once: the same rows
    # as the run that was never stopped (Lightning's CSV writer alone would have deleted epoch 0's rows).
    assert csv_steps(sweep / "1") == csv_steps(sweep / "0")
    assert {epoch for epoch, _, columns in csv_steps(sweep / "1") if "val/acc_top1" in columns} == {"0", "1"}


def csv_steps(run_dir: Path) -> list[tuple[str, str, tuple[str, ...]]]:
    """(epoch, step, the columns with a value) of each row of the run's csv/metrics.csv, in order."""
    with (run_dir / "csv" / "metrics.csv").open(newline="") as handle:
        return [(row["epoch"], row["step"], tuple(sorted(k for k, v in row.items() if v)))
                for row in csv.DictReader(handle)]


def test_a_resumed_runs_csv_keeps_the_rows_before_its_checkpoint(tmp_path):
    """The writer keeps the rows of the steps before the first step the resumed run logs; rows the stopped run
    logged after its checkpoint are dropped (logged again); a fresh run (no checkpoint) starts a new file."""
    from lightning.pytorch.loggers import CSVLogger

    from distill.tracking import keep_csv_rows_on_resume

    folder = tmp_path / "csv"
    folder.mkdir()
    (folder / "metrics.csv").write_text("epoch,step,train/loss,val/acc\n0,9,1.0,\n0,9,,0.5\n1,19,0.8,\n")
    resumed = CSVLogger(tmp_path, name="csv", version="")
    keep_csv_rows_on_resume([resumed])
    resumed.log_metrics({"epoch": 1, "train/loss": 0.7, "train/new": 1.0}, step=19)  # step 19 again
    resumed.save()
    rows = list(csv.DictReader((folder / "metrics.csv").open()))
    assert [(r["epoch"], r["step"], r["train/loss"], r["val/acc"], r["train/new"]) for r in rows] == [
        ("0", "9", "1.0", "", ""), ("0", "9", "", "0.5", ""), ("1", "19", "0.7", "", "1.0")]

    fresh = CSVLogger(tmp_path, name="csv", version="")
    fresh.log_metrics({"epoch": 0, "train/loss": 2.0}, step=9)
    fresh.save()
    assert [r["train/loss"] for r in csv.DictReader((folder / "metrics.csv").open())] == ["2.0"]


@pytest.mark.slow  # the same path as SIGTERM, another subprocess: ~15 s
def test_ctrl_c_also_finishes_the_step_and_writes_a_checkpoint(uninterrupted, tmp_path):
    _, cache = uninterrupted
    stopped = train(tmp_path / "run", cache, *kill_at("SIGINT", epoch=0, batch=5))
    output = stopped.stdout + stopped.stderr
    assert stopped.returncode == 130, output[-3000:]  # 128 + SIGINT
    assert "stopped by SIGINT at epoch 0, step 6" in output and "Traceback" not in output
    assert torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 6
