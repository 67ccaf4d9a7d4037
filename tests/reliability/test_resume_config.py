"""resume=auto reads back or continues a run only if the folder's run had the config asked for now."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from distill.errors import ConfigError
from distill.reliability.resume import RUN_CONFIG, check_same_config, record_run_config
from distill.runner import run


def finished_folder(make_cfg, *overrides: str):
    """A run folder as a finished run leaves it: its config recorded and a metrics.json (monitored 0.75)."""
    cfg = make_cfg(*overrides, "resume=auto")
    folder = cfg.paths.output_dir
    record_run_config(cfg, Path(folder))
    with open(f"{folder}/metrics.json", "w") as handle:
        json.dump({"monitored": 0.75, "stage": "distill"}, handle)
    return folder


def test_a_finished_run_of_the_same_config_is_read_back_without_training(make_cfg):
    finished_folder(make_cfg, "student.kwargs.width=8")
    # A new cache folder, logger or progress bar is not another experiment.
    again = make_cfg("student.kwargs.width=8", "resume=auto", "logger=csv", "paths.cache_dir=/elsewhere")
    assert run(again) == 0.75


def test_a_finished_run_of_another_config_is_an_error_naming_the_keys(make_cfg):
    folder = finished_folder(make_cfg, "student.kwargs.width=16", "loss=kd")
    other = make_cfg("student.kwargs.width=8", "loss=kd", "loss.kd.temperature=2", "resume=auto")
    with pytest.raises(ConfigError) as error:
        run(other)
    message = str(error.value)
    assert f"resume=auto: {folder} holds a run of another config" in message
    assert "loss.kd.temperature: 4.0 there, 2 now" in message
    assert "student.kwargs.width: 16 there, 8 now" in message
    assert "hydra.sweep.dir" in message and "resume=false" in message
    assert json.loads(Path(folder, "metrics.json").read_text())["monitored"] == 0.75  # nothing overwritten


def test_keys_on_one_side_only_are_not_compared(make_cfg, tmp_path):
    cfg = make_cfg("resume=auto")
    folder = tmp_path / "run"
    record_run_config(cfg, folder)
    recorded = json.loads((folder / RUN_CONFIG).read_text())
    recorded["a_setting_added_later"] = 3  # a later version's new key, with the old behaviour as default
    del recorded["seed"]
    (folder / RUN_CONFIG).write_text(json.dumps(recorded))
    check_same_config(cfg, folder)  # no error
    recorded["trainer"]["max_epochs"] = 99
    (folder / RUN_CONFIG).write_text(json.dumps(recorded))
    with pytest.raises(ConfigError, match="trainer.max_epochs: 99 there, 2 now"):
        check_same_config(cfg, folder)


def test_a_folder_from_before_configs_were_recorded_is_read_back_with_a_warning(make_cfg, caplog):
    cfg = make_cfg("resume=auto")
    folder = cfg.paths.output_dir
    Path(folder).mkdir(parents=True)
    with open(f"{folder}/metrics.json", "w") as handle:
        json.dump({"monitored": 0.5}, handle)
    assert run(cfg) == 0.5
    assert f"has no {RUN_CONFIG}" in caplog.text
