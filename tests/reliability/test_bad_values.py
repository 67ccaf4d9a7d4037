"""Every bad value of scripts/bad_inputs/cases_values.py fails before any training with its one-line message."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from distill.cli import check_presets
from distill.config import CONF_DIR
from distill.errors import ConfigError
from distill.runner import prepare
from scripts.bad_inputs.cases_values import BAD_PRESETS, BAD_VALUES

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(("overrides", "message"), BAD_VALUES, ids=[" ".join(o) for o, _ in BAD_VALUES])
def test_bad_value_fails_in_prepare_with_its_message(make_cfg, overrides, message):
    with pytest.raises(ConfigError, match=message) as failure:
        prepare(make_cfg(*overrides))
    assert "\n" not in str(failure.value)  # one line


@pytest.mark.parametrize(("overrides", "message"), BAD_PRESETS, ids=[" ".join(o) for o, _ in BAD_PRESETS])
def test_unknown_preset_is_named_with_its_close_matches(overrides, message):
    with pytest.raises(ConfigError, match=message):
        check_presets([o for o in overrides if "=" in o], CONF_DIR)


def test_known_presets_and_other_overrides_pass_the_preset_check():
    check_presets(["loss=kd,fitnet", "student=cifar_resnet8x4", "hydra/launcher=local_parallel", "seed=0,1",
                   "+experiment=fmnist_benchmark", "~logger", "trainer=ddp"], CONF_DIR)


def test_cli_exits_2_with_one_line_for_an_unknown_preset(tmp_path):
    # A bad value takes the same exit path (tests/test_train.py runs one through the CLI too).
    command = [sys.executable, "-m", "distill.train", "-m", "student=resnet_nope", "logger=none",
               f"hydra.run.dir={tmp_path}", f"paths.cache_dir={tmp_path / 'cache'}"]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
    output = result.stdout + result.stderr
    assert result.returncode == 2, output[-2000:]
    assert "student=resnet_nope is not a preset of 'student'" in output and "Traceback" not in output


def test_progress_bar_can_be_switched_off_with_the_default_callbacks(make_cfg):
    from distill.runner import run

    cfg = make_cfg("trainer.enable_progress_bar=false", "teacher=small_cnn", "student=small_cnn", "logger=csv",
                   "trainer.max_epochs=1", "teacher.train.max_epochs=1", "report.enabled=false",
                   "trainer.limit_train_batches=2", fast=False)
    assert cfg.callbacks.progress_bar is not None
    run(cfg)
    assert (Path(cfg.paths.output_dir) / "metrics.json").is_file()


def test_presets_of_a_config_dir_are_known_and_their_typos_named(tmp_path):
    (tmp_path / "student").mkdir()
    (tmp_path / "student" / "tiny_cnn.yaml").write_text("name: small_cnn\nkwargs: {width: 4}\n")
    check_presets(["--config-dir", str(tmp_path), "student=tiny_cnn"], CONF_DIR)
    check_presets([f"--config-dir={tmp_path}", "-m", "student=tiny_cnn,small_cnn"], CONF_DIR)
    check_presets([f"hydra.searchpath=[file://{tmp_path}]", "student=tiny_cnn"], CONF_DIR)
    with pytest.raises(ConfigError, match=r"student=tiny_cn is not a preset of 'student' \(did you mean tiny_cnn"):
        check_presets(["-cd", str(tmp_path), "student=tiny_cn"], CONF_DIR)
    with pytest.raises(ConfigError, match="is not a preset"):  # without the folder, its preset is unknown
        check_presets(["student=tiny_cnn"], CONF_DIR)
    with pytest.raises(ConfigError, match="--config-dir .*nope: no such folder"):
        check_presets(["--config-dir", str(tmp_path / "nope"), "student=small_cnn"], CONF_DIR)


def test_cli_composes_a_preset_from_a_config_dir(tmp_path):
    (tmp_path / "student").mkdir()
    (tmp_path / "student" / "tiny_cnn.yaml").write_text("name: small_cnn\nkwargs: {width: 4}\n")
    command = [sys.executable, "-m", "distill.train", "--config-dir", str(tmp_path), "student=tiny_cnn",
               "--cfg", "job", "--package", "student"]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "width: 4" in result.stdout


def test_the_command_line_entry_imports_no_heavy_library():
    # --help, completion and config errors must not pay for torch, Lightning, timm or wandb (docs/performance.md).
    code = ("import sys, distill.train; print(sorted(m for m in ('torch', 'lightning', 'timm', 'torchvision', "
            "'wandb', 'sklearn') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.stdout.strip() == "[]", result.stdout + result.stderr[-2000:]


def test_more_cpu_processes_than_cores_get_a_warning_with_the_numbers(caplog, monkeypatch):
    import os

    from omegaconf import OmegaConf

    from distill.config.schema import warn_oversubscribed

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
    with caplog.at_level("WARNING", logger="distill"):
        warn_oversubscribed(OmegaConf.create({"accelerator": "cpu", "devices": 4}))
        assert "trainer.devices=4 CPU processes on 2 core(s)" in caplog.text
        caplog.clear()
        warn_oversubscribed(OmegaConf.create({"accelerator": "cpu", "devices": 2}))
        warn_oversubscribed(OmegaConf.create({"accelerator": "gpu", "devices": 8}))
    assert "CPU processes" not in caplog.text


def test_the_bad_input_table_runs_its_cases_through_the_real_command(tmp_path):
    doc = tmp_path / "reliability.md"
    doc.write_text("before\n<!-- bad-input-table:start -->\nSTALE TABLE\n<!-- bad-input-table:end -->\nafter\n")
    result = subprocess.run([sys.executable, "-m", "scripts.bad_inputs", "--only", "ckpt_path=/no/such",
                             "--out", str(doc), "--json", str(tmp_path / "table.json")], cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    text = doc.read_text()
    assert text.startswith("before\n") and text.endswith("after\n") and "STALE TABLE" not in text
    assert "| ckpt_path=/no/such/last.ckpt | `distill-train ckpt_path=/no/such/last.ckpt` | 2 |" in text
    assert "All 1 as promised" in text
