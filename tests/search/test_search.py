"""distill-search end to end on digits: a miniature search, the budget filter, and kill -9 then resume."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from distill.search.run import search

ROOT = Path(__file__).resolve().parents[2]


def rows(folder: Path) -> list[dict[str, str]]:
    return list(csv.DictReader((folder / "trials.csv").open()))


@pytest.mark.slow
def test_a_miniature_search_trains_each_candidate_once_and_retrains_the_best(make_search_cfg):
    cfg = make_search_cfg("search.final.enabled=true", "search.final.seeds=[0]", space="{small_cnn: {width: [4, 8]}}")
    folder = Path(cfg.paths.output_dir)
    result = search(cfg, folder)
    trials = rows(folder)
    assert len(trials) == 3 and result["trials"] == 3
    # Each set of values trains once: a trial proposing it again is answered from its folder (0 epochs).
    trained = [t for t in trials if t["state"] == "complete"]
    assert len({t["candidate"] for t in trained}) == len(trained)
    assert all(t["epochs"] == "0" for t in trials if t["state"].startswith("repeat"))
    records = list((folder / "trials").glob("*/trial.json"))
    # One folder per student trained: the candidates, and the default student (width 8, the reference trained at
    # the trials' schedule), which a trial proposing width 8 shares.
    assert len(records) == len({t["candidate"] for t in trained} | {"small_cnn(width=8)"})
    assert result["student_epochs"] == sum(json.loads(r.read_text())["epochs"] for r in records)
    # The default student's MACs are the budget (width 8), so both candidates fit; the best is retrained in full.
    assert result["budget"]["limits"] == {"macs": result["budget"]["default_student"]["macs"]}
    best = result["best"]
    assert best["val_acc_top1"] == max(float(t["val_acc_top1"]) for t in trained)
    final = result["final"]
    assert set(final["roles"]) == {"searched", "default_distilled", "default_alone"}
    assert final["roles"]["searched"]["runs"][0]["candidate"] == best["candidate"]
    assert (folder / "final" / "default_alone_seed0" / "metrics.json").is_file()
    assert (folder / "front.png").is_file() and (folder / "study.db").is_file()
    assert "## Pareto front" in (folder / "search.md").read_text()
    assert result["teacher_output_cache_entries_built"] == 1  # one build for every trial (its key has no student)


def test_a_candidate_over_budget_is_measured_but_never_trained(make_search_cfg):
    cfg = make_search_cfg("search.trials=1", space="{small_cnn: {width: [24]}}")
    folder = Path(cfg.paths.output_dir)
    result = search(cfg, folder)
    (trial,) = rows(folder)
    assert trial["state"] == "stopped by budget" and trial["epochs"] == "0" and trial["within_budget"] == "False"
    assert int(trial["macs"]) > result["budget"]["limits"]["macs"]
    assert result["best"] is None and result["stopped_by_budget"] == 1
    assert "No trial within budget finished, so nothing was retrained" in (folder / "search.md").read_text()
    trained = {p.parent.name for p in (folder / "trials").glob("*/trial.json")}
    assert len(trained) == 1  # only the default student's reference run: the candidate has no folder
    measured = list((Path(cfg.paths.cache_dir) / "search_measurements").glob("*.json"))
    assert len(measured) == 3  # the default student, the teacher, the candidate: each measured once


@pytest.mark.slow
def test_a_search_killed_mid_trial_continues_from_the_trials_checkpoint(tmp_path):
    folder = tmp_path / "search"
    command = [sys.executable, "-m", "distill.search.cli", f"hydra.run.dir={folder}",
               f"paths.cache_dir={tmp_path / 'cache'}", "teacher=small_cnn", "teacher.train.max_epochs=2",
               "~callbacks.progress_bar", "trainer.enable_progress_bar=false",
               "~search.space", "+search.space={small_cnn: {width: [4, 6, 8]}}", "search.trials=3",
               "search.trial_epochs=2",
               "search.budget.metric=macs", "search.budget.limits.macs=default", "search.budget.limits.latency_ms=null",
               "search.budget.runtime=pytorch", "search.budget.repeats=3",
               "search.budget.warmup=1", "search.final.enabled=false", "search.sampler=random"]
    kill = ["+callbacks.kill._target_=tests.search.kill.KillInTrial", f"+callbacks.kill.marker={tmp_path / 'fits'}",
            "+callbacks.kill.nth=2"]  # the reference run is the first fit under trials/, the first trial the second
    killed = subprocess.run(command + kill, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert killed.returncode == -9, killed.stderr[-3000:]
    before = {p: p.stat().st_mtime_ns for p in folder.glob("trials/*/trial.json")}
    assert len(before) == 1  # the reference finished; the trial in progress has a checkpoint and no record yet
    interrupted = [p.parent.parent for p in folder.glob("trials/*/checkpoints/last.ckpt")
                   if not (p.parent.parent / "trial.json").exists()]
    assert len(interrupted) == 1
    resumed = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    log = (folder / "cli.log").read_text()
    assert f"continuing from {interrupted[0] / 'checkpoints' / 'last.ckpt'}" in log
    assert {p: p.stat().st_mtime_ns for p in before} == before  # what finished before the kill is not redone
    record = json.loads((interrupted[0] / "trial.json").read_text())
    assert sorted(map(int, record["values"])) == [1]  # only epoch 1 trained after the resume: epoch 0 was kept
    assert len(rows(folder)) == 3
