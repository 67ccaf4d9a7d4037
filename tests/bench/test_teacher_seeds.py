"""A setting with several teachers: the student alone's runs shared between the teachers' folders, and each
row's gain under each teacher and pooled over them (hand-computed intervals)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from scipy import stats

from scripts.bench import methods
from scripts.bench.doc import MethodRuns
from scripts.bench.grid import STRONG, grid
from scripts.bench.results import save_row
from scripts.bench.teacher_seeds import gains_text, restore_other_teachers, share_teacherless_rows, teacher_dirs
from tests.bench.conftest import kept_seed


def test_the_student_alone_is_shared_by_the_second_teacher_with_its_record(tmp_path):
    first, second = tmp_path / "teacher_seed0", tmp_path / "teacher_seed1"
    for seed in range(3):
        kept_seed(first / "student_alone" / str(seed), 0.90, 77_754, None)
    kept_seed(first / "student_alone_60_epochs" / "0", 0.91, 77_754, None)  # 1 of 3 seeds: not shared yet
    (first / "records.json").write_text(json.dumps({"student alone": {"commit": "abc1234"}}))
    rows = grid(STRONG, 30)
    assert teacher_dirs(second, 2) == {0: first, 1: second} and teacher_dirs(tmp_path / "bench", 2) == {}

    assert share_teacherless_rows(rows, second, first, seeds=3) == ["student alone"]
    assert (second / "student_alone").is_symlink() and (second / "student_alone" / "2" / "metrics.json").is_file()
    assert not (second / "student_alone_60_epochs").exists()
    assert json.loads((second / "records.json").read_text()) == {
        "student alone": {"commit": "abc1234", "shared_from": "teacher_seed0"}}
    assert share_teacherless_rows(rows, second, first, seeds=3) == []  # linked once
    # Kept by teacher 0's results folder only: teacher 1's keeps its record, not a second copy of the runs.
    kept = tmp_path / "results_teacher_seed1"
    save_row(second, kept, "student_alone")
    assert not (kept / "student_alone").exists() and "student alone" in json.loads((kept / "records.json").read_text())


def test_a_row_without_a_teacher_is_not_trained_under_the_second_teacher(tmp_path, script_main):
    out = tmp_path / "teacher_seed1"
    with pytest.raises(SystemExit, match=r"\['student alone'\] train the student without a teacher"):
        script_main(methods, "--setting", "strong", "--teacher-seed", "1", "--out-dir", str(out), "--plan",
                    "--methods", "student alone", "kd")
    printed = script_main(methods, "--setting", "strong", "--teacher-seed", "1", "--out-dir", str(out), "--plan")
    assert f"rows without a teacher, shared from {tmp_path / 'teacher_seed0'}: student alone" in printed
    assert "\nstudent alone " not in printed and "\nkd " in printed  # not planned: it trains nothing here


def test_a_new_machine_running_the_second_teacher_gets_the_first_teachers_runs_and_weights(tmp_path, script_main):
    """Run for teacher 1 only, with its own --results: without teacher 0's kept runs, its table would have no
    student alone to share and the gains section no teacher 0 (as a sitting found on a fresh machine); without
    teacher 0's weights, the ensemble row would train teacher 0 again."""
    results, out = tmp_path / "results", tmp_path / "outputs"
    for seed in range(3):
        kept_seed(results / "teacher_seed0" / "student_alone" / str(seed), 0.90, 77_754, None)
        kept_seed(results / "teacher_seed1" / "kd" / str(seed), 0.91, 77_754, None)
    (results / "teacher_seed0" / "records.json").write_text(json.dumps({"student alone": {"commit": "abc1234"}}))
    teacher_record = results / "teacher_seed0" / "teacher" / "metrics.json"
    teacher_record.parent.mkdir()
    teacher_record.write_text(json.dumps({"teacher": {"test_acc_top1": 0.94}}))
    kept_teacher = results / "teacher_seed0" / "teacher" / "cache" / "key0"  # its weights, as save_teacher keeps them
    kept_teacher.mkdir(parents=True)
    (kept_teacher / "teacher.json").write_text("{}")
    (kept_teacher / "model.safetensors").write_bytes(b"weights of teacher 0")
    cache = tmp_path / "cache"
    assert restore_other_teachers(results / "elsewhere", out / "teacher_seed1", cache, 2, 1) == []  # no teacher's

    second = ["--setting", "strong", "--teacher-seed", "1", "--out-dir", str(out / "teacher_seed1")]
    printed = script_main(methods, *second, "--results", str(results / "teacher_seed1"),
                          "--cache-dir", str(cache), "--plan")
    first = out / "teacher_seed0"
    assert sorted(p.parent.name for p in first.glob("student_alone/*/metrics.json")) == ["0", "1", "2"]
    assert json.loads((first / "records.json").read_text()) == {"student alone": {"commit": "abc1234"}}
    assert (first / "teacher" / "metrics.json").is_file()  # the gains section's "teacher 0 (94.00 %)"
    assert (out / "teacher_seed1" / "kd" / "2" / "metrics.json").is_file()  # its own, as before
    assert f"rows without a teacher, shared from {first}: student alone" in printed
    # Teacher 0's weights are in the cache too: the ensemble row, under either teacher's command, distils from it.
    assert (cache / "teachers" / "key0" / "model.safetensors").read_bytes() == b"weights of teacher 0"

    # Teacher 0's command gets teacher 1's runs back in turn (its gains section has both), never its own twice.
    shutil.rmtree(out)
    restored = restore_other_teachers(results / "teacher_seed0", out / "teacher_seed0", cache, 2, 0)
    assert sorted(str(p.relative_to(out)) for p in restored) == [f"teacher_seed1/kd/{seed}/metrics.json"
                                                                 for seed in range(3)]


def interval(a: list[float], b: list[float]) -> tuple[float, float, float]:
    """Welch by hand: the difference, and its 95 % interval with the Welch-Satterthwaite degrees of freedom."""
    def var(x: list[float]) -> float:
        mean = sum(x) / len(x)
        return sum((v - mean) ** 2 for v in x) / (len(x) - 1) / len(x)
    diff = sum(a) / len(a) - sum(b) / len(b)
    se2 = var(a) + var(b)
    dof = se2 ** 2 / (var(a) ** 2 / (len(a) - 1) + var(b) ** 2 / (len(b) - 1))
    half = stats.t.ppf(0.975, dof) * se2 ** 0.5
    return diff, diff - half, diff + half


def test_gains_under_each_teacher_and_pooled():
    alone = [90.0, 90.2, 90.4]
    kd0, kd1, dkd0 = [91.0, 91.2, 91.4], [90.4, 90.6, 90.8], [92.0, 92.2, 92.4]
    # The student alone on a longer schedule has no teacher either: no line of its own.
    longer = MethodRuns("student alone, 60 epochs", "stage=student trainer.max_epochs=60", best=[92.0, 92.1, 92.2])
    rows = {0: [MethodRuns("student alone", "", best=alone), MethodRuns("kd", "", best=kd0),
                MethodRuns("dkd", "", best=dkd0), longer],
            1: [MethodRuns("student alone", "", best=alone), MethodRuns("kd", "", best=kd1)]}
    lines = gains_text(rows, {0: 93.6, 1: None}).splitlines()
    assert lines[0] == "| row | teacher 0 (93.60 %) | teacher 1 (n/a %) | every teacher, pooled |"
    # dof 4 (equal variances, 3 + 3 runs): t = 2.776, se = 0.163: half-width 0.45.
    assert interval(kd0, alone) == pytest.approx((1.0, 0.5466, 1.4534), abs=1e-4)
    assert interval(kd1, alone) == pytest.approx((0.4, -0.0534, 0.8534), abs=1e-4)
    pooled = interval(kd0 + kd1, alone)  # 6 runs, std 0.374: dof 6.8
    assert pooled == pytest.approx((0.7, 0.2441, 1.1559), abs=1e-3)
    assert lines[2] == ("| kd | 91.20 ± 0.20; +1.00 [+0.55, +1.45] * | 90.60 ± 0.20; +0.40 [-0.05, +0.85] | "
                        "90.90 ± 0.37; +0.70 [+0.24, +1.16] * |")
    assert lines[3] == "| dkd | 92.20 ± 0.20; +2.00 [+1.55, +2.45] * | — | — |"  # one teacher: no pooled gain
    assert len(lines) == 4


def test_the_strong_grid_writes_its_gains_section_from_every_teachers_folder(tmp_path: Path):
    """write_teacher_gains reads both teachers' folders (the second sharing the student alone)."""
    base = tmp_path / "benchmark_strong"
    for folder, top1s in (("teacher_seed0/student_alone", [0.900, 0.902, 0.904]),
                          ("teacher_seed0/kd", [0.910, 0.912, 0.914]), ("teacher_seed1/kd", [0.904, 0.906, 0.908]),
                          ("teacher_seed0/mlkd_weight_chosen_on_validation", [0.890, 0.892, 0.894])):
        for seed, top1 in enumerate(top1s):
            kept_seed(base / folder / str(seed), top1, None, None)
    for seed, top1 in ((0, 0.936), (1, 0.935)):
        (base / f"teacher_seed{seed}" / "teacher").mkdir(parents=True)
        (base / f"teacher_seed{seed}" / "teacher" / "metrics.json").write_text(
            json.dumps({"teacher": {"test_acc_top1": top1}}))
    # A row chosen on validation under teacher 0 (tuned.py): in the section whichever teacher's command writes it.
    (base / "teacher_seed0" / "tune_mlkd").mkdir()
    (base / "teacher_seed0" / "tune_mlkd" / "choice.json").write_text(json.dumps(
        {"method": "mlkd", "term": "mlkd", "reference": 0.9, "chosen": 0.09,
         "candidates": [{"weight": 0.9}, {"weight": 0.09}]}))
    share_teacherless_rows(grid(STRONG, 30), base / "teacher_seed1", base / "teacher_seed0", seeds=3)
    args = methods.parse_args(["--setting", "strong", "--teacher-seed", "1", "--out-dir", str(base / "teacher_seed1")])
    doc = tmp_path / "benchmarks.md"
    methods.write_teacher_gains(doc, grid(STRONG, 30), teacher_dirs(args.out_dir, 2), args)
    text = doc.read_text()
    assert "<!-- method-table:benchmark_strong/teachers:start -->" in text
    assert "| row | teacher 0 (93.60 %) | teacher 1 (93.50 %) | every teacher, pooled |" in text
    assert "| kd | 91.20 ± 0.20; +1.00 [+0.55, +1.45] * | 90.60 ± 0.20; +0.40 [-0.05, +0.85] |" in text
    assert "| mlkd, weight chosen on validation | 89.20 ± 0.20; -1.00 [-1.45, -0.55] * | — | — |" in text
