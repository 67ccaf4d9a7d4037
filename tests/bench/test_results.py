"""Kept benchmark results (scripts/bench/results.py): what is kept, what comes back, what stops."""

from __future__ import annotations

from pathlib import Path

import pytest

from scripts.bench.results import restore, save_row, save_teacher, save_top


def touch(path: Path, text: str = "x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_a_row_keeps_its_summaries_not_its_checkpoints(tmp_path):
    out, results = tmp_path / "out", tmp_path / "results"
    kept = ["0/metrics.json", "0/run_config.json", "0/csv/metrics.csv", "1/error.json", "2/metrics.json",
            "2/links/1-born_again/csv/metrics.csv", "2/links/1-born_again/metrics.json"]
    left = ["0/checkpoints/last.ckpt", "0/student.safetensors", "0/train.log", "0/.hydra/config.yaml",
            "0/csv/hparams.yaml", "2/links/1-born_again/checkpoints/best.ckpt"]
    for name in kept + left:
        touch(out / "kd" / name)
    touch(out / "records.json", '{"kd": 1}')
    touch(out / "kd" / "3" / "csv" / "metrics.csv")  # a seed still training: nothing of it is kept
    touch(out / "kd" / "3" / "run_config.json")
    touch(out / "dkd" / "0" / "metrics.json")  # another row: not this call's
    save_row(out, results, "kd")
    row = results / "kd"
    assert sorted(str(p.relative_to(row)) for p in row.rglob("*") if p.is_file()) == sorted(kept)
    assert (results / "records.json").read_text() == '{"kd": 1}' and not (results / "dkd").exists()

    touch(out / "records.json", '{"kd": 1, "dkd": 2}')  # records.json grows with each row: copied again
    touch(out / "kd" / "0" / "metrics.json", "changed")  # a kept run file is never replaced
    save_row(out, results, "dkd")
    assert (results / "records.json").read_text() == '{"kd": 1, "dkd": 2}'
    assert (results / "kd" / "0" / "metrics.json").read_text() == "x" and (results / "dkd" / "0").is_dir()


def test_a_new_machine_gets_the_runs_and_the_teacher_back(tmp_path):
    out, results, cache = tmp_path / "out", tmp_path / "results", tmp_path / "cache"
    for name in ["setting.json", "teacher/metrics.json", "kd/0/metrics.json", "kd/0/csv/metrics.csv"]:
        touch(out / name, name)
    touch(cache / "teachers" / "abc123" / "teacher.safetensors", "weights")
    save_top(out, results)
    save_row(out, results, "kd")
    save_teacher(cache, "abc123", results)

    new_out, new_cache = tmp_path / "new_out", tmp_path / "new_cache"
    touch(new_out / "kd" / "1" / "metrics.json", "a run of this machine")
    touch(new_out / "setting.json", "this machine's")
    restore(results, new_out, new_cache, "abc123")
    assert (new_out / "kd" / "0" / "csv" / "metrics.csv").read_text() == "kd/0/csv/metrics.csv"
    assert (new_out / "teacher" / "metrics.json").read_text() == "teacher/metrics.json"
    assert (new_out / "setting.json").read_text() == "this machine's"  # never overwritten
    assert (new_out / "kd" / "1" / "metrics.json").read_text() == "a run of this machine"
    assert (new_cache / "teachers" / "abc123" / "teacher.safetensors").read_text() == "weights"
    assert not [p for p in (new_cache / "teachers").iterdir() if p.name.startswith(".")]  # no staging left


def test_a_teacher_of_another_recipe_stops_before_anything_is_copied(tmp_path):
    results = tmp_path / "results"
    touch(results / "teacher" / "cache" / "abc123" / "teacher.safetensors")
    touch(results / "kd" / "0" / "metrics.json")
    with pytest.raises(SystemExit, match=r"teacher abc123, but this config's teacher key is def456"):
        restore(results, tmp_path / "out", tmp_path / "cache", "def456")
    assert not (tmp_path / "out").exists() and not (tmp_path / "cache").exists()


def test_no_results_folder_yet_restores_nothing(tmp_path):
    assert restore(tmp_path / "results", tmp_path / "out", tmp_path / "cache", "abc123") == []


def test_a_teacher_whose_cache_entry_is_gone_cannot_be_kept(tmp_path):
    with pytest.raises(SystemExit, match=r"cache entry .*abc123 is gone .* give a new --out-dir and --results"):
        save_teacher(tmp_path / "cache", "abc123", tmp_path / "results")
    assert not (tmp_path / "results").exists()
