"""Kept benchmark results (scripts/bench/results.py): what is kept, what comes back, what stops, and the size of
the deployed student a kept run says."""

from __future__ import annotations

import sys
import time
from functools import partial
from pathlib import Path

import pytest

from distill.io import read_json, write_json
from scripts.bench.results import Size, closest_width, deployed_size, restore, save_row, save_teacher, save_top
from scripts.bench.training import train
from tests.bench.conftest import kept_seed, run_config


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
    assert read_json(results / "records.json") == {"kd": 1} and not (results / "dkd").exists()

    touch(out / "records.json", '{"kd": 1, "dkd": 2}')  # records.json grows with each row: copied again
    touch(out / "kd" / "0" / "metrics.json", "changed")  # a kept run file is never replaced
    save_row(out, results, "dkd")
    assert read_json(results / "records.json") == {"kd": 1, "dkd": 2}
    assert (results / "kd" / "0" / "metrics.json").read_text() == "x" and (results / "dkd" / "0").is_dir()


# A row of two seeds as a multirun trains it: seed 0 finishes, then seed 1 starts only once seed 0 is in the results
# folder (within 10 s), so the row ends well only if its first seed was kept while the second still trained.
TWO_SEEDS = """
import json, pathlib, sys, time
row, kept = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
(row / "0" / "csv").mkdir(parents=True)
(row / "0" / "csv" / "metrics.csv").write_text("epoch\\n0\\n")
(row / "0" / "metrics.json").write_text(json.dumps({"seconds": 1}))
for _ in range(200):
    if (kept / "0" / "metrics.json").is_file():
        break
    time.sleep(0.05)
else:
    sys.exit(3)
(row / "1" / "csv").mkdir(parents=True)
(row / "1" / "csv" / "metrics.csv").write_text("epoch\\n0\\n")
(row / "1" / "metrics.json").write_text(json.dumps({"seconds": 2}))
"""


def test_a_rows_finished_seeds_are_kept_while_its_other_seeds_train(tmp_path):
    out, results = tmp_path / "out", tmp_path / "results"
    keep = partial(save_row, out, results, "kd")
    returncode, _ = train([sys.executable, "-c", TWO_SEEDS, str(out / "kd"), str(results / "kd")],
                          tmp_path / "kd.log", keep, every=0.1)
    assert returncode == 0, (tmp_path / "kd.log").read_text()  # 3: seed 0 was not kept while the row ran
    # and the seed that finished last is kept when the row ends
    assert read_json(results / "kd" / "1" / "metrics.json") == {"seconds": 2}


def test_a_keep_that_fails_stops_the_training_it_watched(tmp_path):
    def disk_full() -> None:
        raise OSError(28, "No space left on device")

    started = time.perf_counter()
    with pytest.raises(OSError, match="No space left"):
        train([sys.executable, "-c", "import time; time.sleep(60)"], tmp_path / "kd.log", disk_full, every=0.1)
    assert time.perf_counter() - started < 30  # the training was killed and waited for, not left to run 60 s


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


def test_records_of_rows_trained_elsewhere_and_here_are_merged_both_ways(tmp_path):
    """A results folder with rows of another machine's sitting, restored into an out-dir that already has records
    of its own: the out-dir gets the other rows' commits, and saving keeps every row's (an out-dir's record
    wins for a row named in both: it is the newer one)."""
    out, results, cache = tmp_path / "out", tmp_path / "results", tmp_path / "cache"
    touch(results / "records.json", '{"kd": {"commit": "aaa"}, "fitnet": {"commit": "bbb"}}')
    touch(out / "records.json", '{"kd": {"commit": "ccc"}, "student alone": {"commit": "ddd"}}')
    restore(results, out, cache, "abc123")
    merged = {"kd": {"commit": "ccc"}, "fitnet": {"commit": "bbb"}, "student alone": {"commit": "ddd"}}
    assert read_json(out / "records.json") == merged
    write_json(out / "records.json", {**merged, "mlkd": {"commit": "eee"}})  # a row trained here since
    save_top(out, results)
    assert read_json(results / "records.json") == {**merged, "mlkd": {"commit": "eee"}}  # kd: this out-dir's
    write_json(out / "records.json", {"mlkd": {"commit": "eee"}})  # an out-dir that lost the other rows' records
    save_top(out, results)
    assert read_json(results / "records.json") == {**merged, "mlkd": {"commit": "eee"}}  # the results keep them


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


def test_the_deployed_students_size_is_read_from_the_kept_run(kept_runs, tmp_path):
    """Parameters as the run counted them (metrics.json), MACs of the network rebuilt from run_config.json.

    small_cnn at width w on 28 x 28 x 1 (3x3 convs: 1 -> w, w -> 2w stride 2, 2w -> 4w stride 2; BN; fc 4w -> 10):
    parameters 9w + 18w² + 72w² + 2(w + 2w + 4w) + 40w + 10 = 90w² + 63w + 10, MACs 784·9w + 196·18w² + 49·72w²
    + 40w = 7056w² + 7096w; at w = 8: 6,274 and 508,352. SimKD drops the fc (330, 320 MACs) and adds a projector
    32 -> 64 (1x1) -> 64 (3x3) -> 128 (1x1) with BN (47,616) at 7 x 7 (49 · 47,104 MACs) and the teacher's fc
    128 -> 10 (1,290; 1,280 MACs): 54,850 parameters, 2,817,408 MACs.
    """
    assert deployed_size(kept_runs / "student_alone" / "0") == (6274, 508_352)
    assert deployed_size(kept_runs / "kd" / "1") == (6274, 508_352)
    assert deployed_size(kept_runs / "simkd" / "0") == (54_850, 2_817_408)
    # A network that the code no longer builds as the run did (another count): no MACs rather than another's.
    other = kept_seed(tmp_path / "other" / "0", 0.8, 6275, run_config(tmp_path, "student"))
    assert deployed_size(other) == (6275, None)
    assert deployed_size(kept_seed(tmp_path / "old" / "0", 0.8, 6274, None)) == (6274, None)  # no run_config.json
    assert deployed_size(kept_seed(tmp_path / "older" / "0", 0.8, None, None)) == (None, None)


def test_the_width_closest_to_a_size_in_parameters_and_in_macs(tmp_path):
    """SimKD's 54,850 parameters: width 24 has 53,362, width 25 57,835; its 2,817,408 MACs: width 19 has 2,682,040,
    width 20 2,964,320 (the formulas of the test above)."""
    alone = run_config(tmp_path, "student")
    assert closest_width(alone, "params", 54_850) == (24, Size(53_362, 4_234_560))
    assert closest_width(alone, "macs", 2_817_408) == (19, Size(33_697, 2_682_040))
    assert closest_width(alone, "params", 6274) == (8, Size(6274, 508_352))  # an exact match
