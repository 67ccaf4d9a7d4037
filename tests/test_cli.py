"""Every distill-* command: a real help text, and bad input answered with one line and exit code 2, quickly."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MODULES = {"distill-train": "distill.train", "distill-eval": "distill.evaluate", "distill-layers": "distill.layers",
           "distill-compress": "distill.compress.cli", "distill-summarize": "distill.summarize"}


def command(name: str, *args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", MODULES[name], *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300)


@pytest.mark.parametrize("name", sorted(MODULES))
def test_help_names_the_command_and_shows_its_usage(name):
    result = command(name, "--help")
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.lstrip().startswith(f"{name}:") or f"usage: {name}" in result.stdout
    assert "powered by Hydra" not in result.stdout and "Traceback" not in result.stderr


BAD_INPUT = [
    ("distill-train", ["student=nope"], "student=nope is not a preset of 'student'"),
    ("distill-train", ["trainer.max_epoch=3"], "trainer.max_epoch is not a key of the config (did you mean"),
    ("distill-train", ["trainer.max_epochs=[1"], "cannot read the override 'trainer.max_epochs=[1'"),
    ("distill-train", ["optimizer.lr=abc"], "optimizer.lr='abc' is not a number"),
    ("distill-eval", ["data=nope"], "data=nope is not a preset of 'data'"),
    ("distill-eval", ["repor.repeats=3"], "repor.repeats is not a key of the config"),
    ("distill-layers", ["student=nope"], "student=nope is not a preset of 'student'"),
    ("distill-layers", ["student.nam=x"], "student.nam is not a key of the config (did you mean student.name"),
    ("distill-layers", ["+show=all"], "show=all is not one of: student, teacher, both"),
    ("distill-layers", ["student.name=resnet_nope"], "unknown student model 'resnet_nope'"),
    ("distill-compress", ["compress=nope"], "compress=nope is not a preset of 'compress'"),
    ("distill-compress", ["run=/nonexistent", "compress=int8"], "run=/nonexistent is not a distill run folder"),
    ("distill-summarize", ["/nonexistent"], "/nonexistent holds no runs"),
]


@pytest.mark.parametrize(("name", "args", "message"), BAD_INPUT, ids=[f"{n} {' '.join(a)}" for n, a, _ in BAD_INPUT])
def test_bad_input_is_one_line_and_exit_code_2(name, args, message, tmp_path):
    result = command(name, *args, f"hydra.run.dir={tmp_path / 'run'}" if name != "distill-summarize" else "--output",
                     *([str(tmp_path)] if name == "distill-summarize" else []), cwd=tmp_path)
    output = result.stdout + result.stderr  # a run's errors also go to its log; the console shows them once
    assert result.returncode == 2, output[-2000:]
    assert message in output and "Traceback" not in output
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1, output
