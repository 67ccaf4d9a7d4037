"""Every distill-* command: a real help text, and bad input answered with one line and exit code 2, quickly."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MODULES = {"distill-train": "distill.train", "distill-eval": "distill.evaluate", "distill-layers": "distill.layers",
           "distill-compress": "distill.compress.cli", "distill-summarize": "distill.summarize",
           "distill-search": "distill.search.cli", "distill-predict": "distill.predict"}


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
    ("distill-train", ["-m", "loss=glob(kx*)"], "loss=glob(kx*) selects no preset of 'loss'"),
    ("distill-eval", ["data=nope"], "data=nope is not a preset of 'data'"),
    ("distill-eval", ["repor.repeats=3"], "repor.repeats is not a key of the config"),
    ("distill-layers", ["student=nope"], "student=nope is not a preset of 'student'"),
    ("distill-layers", ["student.nam=x"], "student.nam is not a key of the config (did you mean student.name"),
    ("distill-layers", ["+show=all"], "show=all is not one of: student, teacher, both"),
    ("distill-layers", ["student.name=resnet_nope"], "unknown student model 'resnet_nope'"),
    ("distill-compress", ["compress=nope"], "compress=nope is not a preset of 'compress'"),
    ("distill-compress", ["run=/nonexistent", "compress=int8"], "run=/nonexistent is not a distill run folder"),
    ("distill-summarize", ["/nonexistent"], "/nonexistent holds no runs"),
    ("distill-predict", ["nope.onnx", "x.png"], "no such model file"),
    ("distill-search", ["search.trials=0"], "search.trials=0 must be a whole number >= 1"),
    ("distill-search", ["search.budget.metric=speed"], "search.budget.metric=speed is not one of"),
    ("distill-search", ["search.budget.limits.latency_ms=null"], "search.budget.limits sets no limit"),
    ("distill-search", ["+search.training={loss.kd.temprature: [2, 4]}"],
     "loss.kd.temprature is not a key of the config (did you mean loss.kd.temperature"),
    ("distill-search", ["+search.space.resnet_nope={}"], "resnet_nope"),
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


def test_a_runs_console_says_each_thing_once_without_library_noise(tmp_path):
    args = ["teacher=small_cnn", "teacher.train.max_epochs=1", "trainer.max_epochs=1", "trainer.limit_train_batches=3",
            "logger=wandb", "report.repeats=3", "report.warmup=1", "report.throughput_batch_size=16",
            f"paths.cache_dir={tmp_path / 'cache'}", f"hydra.run.dir={tmp_path / 'run'}"]
    result = command("distill-train", *args, cwd=tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    for noise in ("GPU available", "TPU available", "litlogger", "LeafSpec", "weights_only", "Run history"):
        assert noise not in output, noise
    assert output.count("kept ") == 1  # the student/teacher comparison, in the summary only
    assert "distilling: teacher small_cnn -> student small_cnn (6,274 parameters), loss ce 0.1 + kd 0.9 " \
           "(temperature 4.0), 1 epochs" in output
    assert "teacher small_cnn, best weights on the test split: acc_top1" in output
    assert "student small_cnn, best weights on the test split: acc_top1" in output
    assert "loss: ce 0.1 + kd 0.9 (temperature 4.0)" in result.stdout
    syncs = [line for line in output.splitlines() if "wandb sync" in line]
    assert len(syncs) == 2 and len(set(syncs)) == 2  # the teacher's run and the student's, each said once


def test_the_progress_bar_shows_what_fits_100_columns():
    from distill.progress import METRICS_WIDTH, short_metrics

    values = {"v_num": "ab12", "val/acc_top1": 0.99305, "val/acc_top5": 1.0, "val/teacher_acc_top1": 0.986,
              "train/loss_step": 0.20612, "train/loss_epoch": 0.32, "train/acc_top1": 0.998, "val/agreement": 0.99}
    shown = short_metrics(values)
    assert shown == {"val_acc": "0.993", "loss": "0.206"}
    assert len(", ".join(f"{k}={v}" for k, v in shown.items())) <= METRICS_WIDTH
    # tqdm's part with 4-digit batch counts is 66 characters: the line stays within 100.
    assert 66 + METRICS_WIDTH <= 100


def test_the_startup_benchmark_times_every_command(tmp_path):
    out = tmp_path / "startup.json"
    result = subprocess.run([sys.executable, "-m", "scripts.bench", "startup", "--repeats", "1", "--out", str(out)],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    import json

    rows = json.loads(out.read_text())["rows"]
    assert len(rows) == 8 and all(row["now"]["median_s"] > 0 for row in rows)
    assert "| distill-train --help |" in result.stdout


def test_shell_completion_lists_presets(tmp_path):
    env = {**__import__("os").environ, "COMP_LINE": "distill-train student=", "COMP_POINT": "22"}
    result = subprocess.run([sys.executable, "-m", "distill.train", "-sc", "query=bash"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "student=cifar_resnet8x4" in result.stdout and "student=small_cnn" in result.stdout


def test_a_glob_sweep_over_presets_passes_the_preset_check():
    from distill.cli import check_presets
    from distill.config import CONF_DIR

    check_presets(["-m", "loss=glob(*,exclude=[fsp,kdsvd])", "seed=0,1"], CONF_DIR)  # Hydra expands it later
