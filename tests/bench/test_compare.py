"""python -m scripts.bench compare: one row under several settings, the choice made on validation."""

import json
from pathlib import Path

import pytest

from scripts.bench import compare  # its main runs in this process: conftest.script_main


def out_dir(path: Path, extra: list[str], rows: dict[str, list[tuple[float, float]]]) -> Path:
    """A benchmark out-dir: setting.json and, per row, one metrics.json per seed with (val best, test) in %."""
    path.mkdir()
    (path / "setting.json").write_text(json.dumps({"experiment": "fmnist_benchmark", "extra": extra}))
    for row, seeds in rows.items():
        for seed, (val, test) in enumerate(seeds):
            (path / row / str(seed)).mkdir(parents=True)
            (path / row / str(seed) / "metrics.json").write_text(json.dumps({
                "monitored": val / 100, "student": {"test_acc_top1": test / 100},
                "metrics": {"test_last/acc_top1": (test - 1) / 100}}))
    return path


def test_the_setting_validation_picks_and_its_gain_by_hand(tmp_path, script_main):
    first = out_dir(tmp_path / "e60", ["teacher_cache.augmentations=true"],
                    {"student_alone": [(81, 80), (83, 82)], "kd": [(82, 81), (84, 83)]})
    t2 = out_dir(tmp_path / "e60_T2", ["teacher_cache.augmentations=true", "loss.kd.temperature=2"],
                 {"kd": [(85, 84), (87, 86)]})
    stdout = script_main(compare, "--row", "kd", str(first), str(t2), "--out", str(tmp_path / "kd.json"))
    # T 2 against the student alone: diff 4, se² = 2/2 + 2/2 = 2, dof = 2² / (1²/1 + 1²/1) = 2,
    # t(0.975, 2) = 4.3027 from a t table: half-width 4.3027 · √2 = 6.085.
    assert ("| loss.kd.temperature=2 (picked by validation) | 2 | 86.00 ± 1.41 | 85.00 ± 1.41 | 84.00 ± 1.41 | "
            "+4.00 [-2.08, +10.08] |") in stdout
    assert "| the kd preset | 2 | 83.00 ± 1.41 | 82.00 ± 1.41 | 81.00 ± 1.41 | +1.00 [" in stdout
    assert "| student alone | 2 | 82.00 ± 1.41 | 81.00 ± 1.41 | 80.00 ± 1.41 | — |" in stdout
    saved = json.loads((tmp_path / "kd.json").read_text())
    assert saved["picked_by_validation"] == "loss.kd.temperature=2" and len(saved["entries"]) == 2


def test_a_folder_that_is_not_a_benchmark_out_dir_is_refused_by_name(tmp_path, script_main):
    with pytest.raises(SystemExit, match="no setting.json") as refusal:
        script_main(compare, "--row", "kd", str(tmp_path))
    assert str(tmp_path) in str(refusal.value.code)


def test_every_row_is_compared_against_the_student_alone_of_its_own_schedule(tmp_path, script_main):
    short = out_dir(tmp_path / "e15", [], {"student_alone": [(81, 80), (83, 82)], "kd": [(84, 83), (86, 85)],
                                           "at": [(80, 79), (82, 81)], "fitnet": [(80, 79)]})
    long = out_dir(tmp_path / "e60", ["teacher_cache.augmentations=true"],
                   {"student_alone": [(85, 84), (87, 86)], "kd": [(85, 84), (87, 86)], "at": [(86, 85), (88, 87)]})
    for folder, epochs in ((short, 15), (long, 60)):
        setting = json.loads((folder / "setting.json").read_text())
        (folder / "setting.json").write_text(json.dumps({**setting, "epochs": epochs, "batches": 100}))
    lines = script_main(compare, "--every-row", str(short), str(long), "--out", str(tmp_path / "rows.json")
                ).splitlines()
    # Labelled by what differs (epochs and overrides; batches and experiment are equal).
    assert lines[0].startswith("| row | epochs 15, no overrides: top-1 % (seeds) | gain (95 % CI) | "
                               "epochs 60, teacher_cache.augmentations=true: top-1 % (seeds) |")
    # KD: +3 against the 15-epoch baseline (81), 0 against the 60-epoch one (85), not +3 against 81 twice.
    # Each gain: diff d, se² = 2/2 + 2/2 = 2, dof 2, t(0.975, 2) = 4.3027: half-width 6.085.
    assert "| kd | 84.00 ± 1.41 (2) | +3.00 [-3.08, +9.08] | 85.00 ± 1.41 (2) | +0.00 [-6.08, +6.08] |" in lines
    assert "| at | 80.00 ± 1.41 (2) | -1.00 [-7.08, +5.08] | 86.00 ± 1.41 (2) | +1.00 [-5.08, +7.08] |" in lines
    # Ordered by the last setting's gain; fitnet has no 60-epoch run, so it is not a row.
    rows = [line.split(" | ")[0] for line in lines[3:] if line.startswith("|")]
    assert rows == ["| at", "| kd"]
    saved = json.loads((tmp_path / "rows.json").read_text())
    assert sorted(saved["rows"]) == ["at", "kd"] and saved["settings"][1]["baseline"]["test_best"] == [84.0, 86.0]
