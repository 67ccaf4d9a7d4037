"""Sweeps through the real CLI: a 2x2 multirun sharing one teacher, Optuna, parallel jobs with a failure."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from distill.summarize import summarize_sweep
from distill.tracking import apply_to_wandb_loggers, sweep_dashboard_fields
from tests.conftest import FAST

TINY = [*FAST, "trainer.max_epochs=1", "trainer.limit_train_batches=2", "trainer.limit_val_batches=2",
        "teacher.train.max_epochs=1"]


def distill_train(tmp_path: Path, *overrides: str, multirun: bool = False) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "distill.train", *(["-m"] if multirun else []), *TINY,
               f"paths.cache_dir={tmp_path / 'cache'}", f"hydra.sweep.dir={tmp_path / 'sweep'}", *overrides]
    return subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=600)


def runs(sweep: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(sweep.glob("*/metrics.json"))]


def test_two_by_two_multirun_trains_the_teacher_once_and_summarizes(tmp_path):
    result = distill_train(tmp_path, "loss=kd,fitnet", "seed=0,1", multirun=True)
    assert result.returncode == 0, result.stderr[-2000:]
    sweep = tmp_path / "sweep"
    summaries = runs(sweep)
    assert len(summaries) == 4
    assert [s["teacher"]["trained_now"] for s in summaries].count(True) == 1
    assert len({s["teacher"]["cache_key"] for s in summaries}) == 1

    summary = summarize_sweep(sweep)
    assert {row["method"] for row in summary["rows"]} == {"kd", "fitnet"}
    assert all(row["seeds"] == 2 for row in summary["rows"])
    for row in summary["rows"]:
        values = [100 * json.loads((Path(r) / "metrics.json").read_text())["student"]["test_acc_top1"]
                  for r in row["runs"]]
        assert row["student_top1_mean"] == sum(values) / 2
        assert row["macs"] > 0 and row["latency_ms"] > 0
    assert "| kd |" in summary["table"] and "± " in summary["table"]
    for name in ("summary.md", "summary.csv", "summary_methods.png", "summary_accuracy_vs_macs.png"):
        assert (sweep / name).is_file(), name
    assert (sweep / "summary_methods.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow  # a subprocess with Optuna: ~20 s
def test_optuna_sweeper_runs_two_trials(tmp_path):
    result = distill_train(tmp_path, "hparams_search=kd_optuna", "hydra.sweeper.n_trials=2")
    assert result.returncode == 0, result.stderr[-2000:]
    sweep = tmp_path / "sweep"
    assert len(runs(sweep)) == 2
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert set(best["best_params"]) == {"loss.kd.temperature", "loss.kd.weight"}
    assert 0.0 <= best["best_value"] <= 1.0


@pytest.mark.slow  # joblib workers: ~35 s
def test_parallel_jobs_finish_when_one_fails_and_the_summary_lists_it(tmp_path):
    result = distill_train(tmp_path, "hydra/launcher=local_parallel", "student.name=small_cnn,cifar_resnet8x5",
                           multirun=True)
    assert result.returncode != 0  # Hydra reports the failed job after the others finished
    sweep = tmp_path / "sweep"
    assert len(runs(sweep)) == 1
    summary = summarize_sweep(sweep)
    (failure,) = summary["failures"]
    assert "unknown student model 'cifar_resnet8x5'" in failure.error
    assert "Failed runs (1)" in summary["table"] and "cifar_resnet8x5" in summary["table"]
    assert len(summary["rows"]) == 1


def test_summarize_an_empty_folder_says_so(tmp_path):
    result = subprocess.run([sys.executable, "-m", "distill.summarize", str(tmp_path)], capture_output=True, text=True)
    assert result.returncode != 0 and "holds no runs" in result.stderr


@pytest.mark.slow  # a subprocess: ~15 s
def test_unknown_override_key_is_named_with_its_close_match(tmp_path):
    result = distill_train(tmp_path, "trainer.max_epoch=3")
    assert result.returncode == 2
    assert ("error: trainer.max_epoch is not a key of the config (did you mean trainer.max_epochs" in result.stderr
            and "+trainer.max_epoch=" in result.stderr and "Traceback" not in result.stderr)


def test_wandb_runs_of_a_sweep_are_grouped():
    fields = sweep_dashboard_fields("outputs/multirun/2026-11-28_10-00-00", "fitnet", ["loss=fitnet", "seed=1"])
    assert fields == {"group": "2026-11-28_10-00-00", "job_type": "fitnet", "tags": ["loss=fitnet", "seed=1"]}
    from omegaconf import OmegaConf

    loggers = OmegaConf.create({"wandb": {"_target_": "lightning.pytorch.loggers.WandbLogger", "group": None},
                                "csv": {"_target_": "lightning.pytorch.loggers.CSVLogger"}})
    apply_to_wandb_loggers(loggers, fields)
    assert loggers.wandb.group == "2026-11-28_10-00-00" and loggers.wandb.job_type == "fitnet"
    assert "group" not in loggers.csv
