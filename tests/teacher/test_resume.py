"""A teacher, chain link or generation stopped while it trains continues from its own checkpoint (#31 item 7):
the printed command is ``resume=auto`` (not the student's ``ckpt_path``), and the resumed teacher ends with the
uninterrupted teacher's weights, bit for bit.

Real subprocesses; the run's seed is 1 and the teacher's 0, so a signal callback with ``seed=0`` fires in the
teacher's fit only.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.reliability.test_exact_resume import assert_identical, kill_at

ROOT = Path(__file__).resolve().parents[2]
# digits: 21 batches per epoch; the teacher trains 2 epochs (42 steps) with a checkpoint every 3 steps.
CONFIG = ["teacher=small_cnn", "teacher.train.max_epochs=2", "student=small_cnn", "trainer.max_epochs=1",
          "seed=1", "data.random_crop_padding=1", "data.horizontal_flip=true", "trainer.deterministic=true",
          "callbacks.last_checkpoint.every_n_train_steps=3", "logger=csv", "callbacks.progress_bar=null",
          "trainer.enable_progress_bar=false", "report.enabled=false"]


def train(run_dir: Path, cache: Path, *overrides: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "distill.train", *CONFIG, f"paths.cache_dir={cache}",
               f"hydra.run.dir={run_dir}", *overrides]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)


def teacher_state(run_dir: Path) -> dict[str, torch.Tensor]:
    state = torch.load(run_dir / "teacher" / "checkpoints" / "last.ckpt", weights_only=True)
    assert state["global_step"] == 42, state["global_step"]
    return state["state_dict"]


@pytest.fixture(scope="module")
def uninterrupted_teacher(tmp_path_factory) -> dict[str, torch.Tensor]:
    root = tmp_path_factory.mktemp("teacher_resume")
    result = train(root / "whole", root / "cache")
    assert result.returncode == 0, result.stderr[-3000:]
    return teacher_state(root / "whole")


def test_sigterm_in_the_teacher_prints_resume_auto_which_finishes_it_exactly(uninterrupted_teacher, tmp_path):
    run_dir = tmp_path / "run"
    stopped = train(run_dir, tmp_path / "cache", *kill_at("SIGTERM", epoch=1, batch=8, seed=0))
    output = stopped.stdout + stopped.stderr
    assert stopped.returncode == 143, output[-3000:]
    command = next(line for line in output.splitlines() if "resume with: distill-train" in line)
    assert command.endswith(f"resume=auto hydra.run.dir={run_dir}") and "ckpt_path=" not in command
    assert torch.load(run_dir / "teacher" / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 30

    # The printed command, as printed (the kill callback is one of its overrides: drop it, as a user would
    # not stop the resumed run again).
    args = [arg for arg in shlex.split(command.split("resume with: ")[1])[1:] if "callbacks.kill" not in arg]
    resumed = subprocess.run([sys.executable, "-m", "distill.train", *args], cwd=ROOT, capture_output=True,
                             text=True, timeout=300)
    output = resumed.stdout + resumed.stderr
    assert resumed.returncode == 0, output[-3000:]
    assert f"continuing teacher small_cnn from {run_dir / 'teacher' / 'checkpoints' / 'last.ckpt'}" in output
    assert_identical(teacher_state(run_dir), uninterrupted_teacher)
    assert sorted(p.name for p in (run_dir / "teacher" / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]
    assert (run_dir / "metrics.json").is_file()


def test_sigkill_in_the_teacher_then_resume_auto_continues_it_exactly(uninterrupted_teacher, tmp_path):
    run_dir = tmp_path / "run"
    killed = train(run_dir, tmp_path / "cache", *kill_at("SIGKILL", epoch=1, batch=8, seed=0))
    assert killed.returncode == -9
    again = train(run_dir, tmp_path / "cache", "resume=auto")
    output = again.stdout + again.stderr
    assert again.returncode == 0, output[-3000:]
    assert "continuing teacher small_cnn from" in output
    assert_identical(teacher_state(run_dir), uninterrupted_teacher)
    assert sorted(p.name for p in (run_dir / "teacher" / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]


def test_a_chain_link_stopped_mid_training_continues_from_its_own_checkpoint(tmp_path):
    chain = ["chain=[small_cnn,{name:small_cnn,kwargs:{width:16}},{name:small_cnn,kwargs:{width:8}}]",
             "teacher.train.max_epochs=1"]
    run_dir = tmp_path / "chain"
    # Links train with seeds 1 (link 1) and 2 (link 2): stop link 2.
    stopped = train(run_dir, tmp_path / "cache", *chain, *kill_at("SIGTERM", epoch=0, batch=5, seed=2))
    output = stopped.stdout + stopped.stderr
    assert stopped.returncode == 143, output[-3000:]
    command = next(line for line in output.splitlines() if "resume with: distill-train" in line)
    assert command.endswith(f"resume=auto hydra.run.dir={run_dir}") and "ckpt_path=" not in command
    link = run_dir / "links" / "2-small_cnn" / "checkpoints" / "last.ckpt"
    assert torch.load(link, weights_only=True)["global_step"] == 6
    # What the stopped call trained, as each model's last checkpoint kept it: the teacher, link 1, part of link 2.
    trained_before = {path.relative_to(run_dir).parts[-3]: torch.load(path, weights_only=True)["callbacks"]["Timer"]
                      ["time_elapsed"]["train"] for path in run_dir.rglob("last.ckpt")}
    assert sorted(trained_before) == ["1-small_cnn", "2-small_cnn", "teacher"]

    again = train(run_dir, tmp_path / "cache", *chain, "resume=auto")
    output = again.stdout + again.stderr
    assert again.returncode == 0, output[-3000:]
    summary = json.loads((run_dir / "metrics.json").read_text())
    assert summary["seconds_earlier_calls"] == pytest.approx(sum(trained_before.values()))
    assert f"continuing student (link 2) from {link}" in output
    assert "link 1 (small_cnn) reused from the cache" in output
    assert torch.load(link, weights_only=True)["global_step"] == 21  # one whole epoch, not 6 + 21

    refused = train(run_dir, tmp_path / "cache", *chain, f"ckpt_path={link}")
    assert refused.returncode == 2 and "continues with resume=auto" in refused.stdout + refused.stderr
