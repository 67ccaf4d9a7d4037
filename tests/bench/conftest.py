"""A miniature kept results folder of the methods command: the files a row's seeds leave (metrics.json,
run_config.json) for the student alone, KD and SimKD, and records.json, which also names a row whose runs are gone."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from scripts.bench.grid import loss_preset


def run_config(tmp_path: Path, stage: str, loss: str | None = None, width: int = 8) -> dict[str, Any]:
    """What run_config.json holds of the benchmark's runs: a width-8 small_cnn under a width-32 teacher on
    Fashion-MNIST (whose images are never read here)."""
    return {"stage": stage, "seed": 0,
            "data": {"_target_": "distill.data.FashionMNISTDataModule", "root": str(tmp_path / "no-images")},
            "student": {"name": "small_cnn", "kwargs": {"width": width}},
            "teacher": {"name": "small_cnn", "kwargs": {"width": 32}, "pretrained": False, "weights": None},
            "loss": loss_preset(loss or "ce")}


def kept_seed(folder: Path, top1: float, params: int | None, config: dict[str, Any] | None) -> Path:
    """One seed's kept files: its metrics.json (test top-1 as a fraction, the exported network's parameters)
    and, unless None, its run_config.json."""
    folder.mkdir(parents=True)
    student = {"test_acc_top1": top1} | ({"params": params} if params is not None else {})
    (folder / "metrics.json").write_text(json.dumps({"student": student, "metrics": {"test_last/acc_top1": top1},
                                                     "monitored": top1, "seconds": 60.0}))
    if config is not None:
        (folder / "run_config.json").write_text(json.dumps(config))
    return folder


@pytest.fixture
def kept_runs(tmp_path: Path) -> Path:
    """student alone (6,274 parameters), kd (the same network) and simkd (54,850: its projector and the teacher's
    classifier), two seeds each; dist in records.json only, its folder gone."""
    results = tmp_path / "results"
    rows = {"student_alone": ("student", None, 6274, [0.840, 0.842]),
            "kd": ("distill", "kd", 6274, [0.846, 0.848]),
            "simkd": ("distill", "simkd", 54850, [0.860, 0.864])}
    for folder, (stage, loss, params, top1s) in rows.items():
        for seed, top1 in enumerate(top1s):
            kept_seed(results / folder / str(seed), top1, params, run_config(tmp_path, stage, loss))
    records = {name: {"commit": "abc1234", "returncode": 0, "finished_at": "2026-11-29 13:30:02"}
               for name in ("student alone", "kd", "simkd", "dist")}
    (results / "records.json").write_text(json.dumps(records))
    return results
