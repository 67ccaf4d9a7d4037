"""The method table's statistics against hand computations, and the document the methods command writes
(tables, curves, sections per out-dir and teacher, the command line it names)."""

import json
import math
from pathlib import Path

import pytest

from scripts.bench import (
    methods,  # the command's own functions, tested without a subprocess
    training,
)
from scripts.bench import rows as bench_rows
from scripts.bench.doc import (
    MethodRuns,
    curves_table,
    differences_text,
    learning_curve,
    method_table,
    plateau_table,
    section_name,
    write_doc,
)
from scripts.bench.grid import FMNIST
from scripts.bench.stats import gap_closed, real_differences, welch_interval
from scripts.bench.table_command import table_command
from tests.bench.conftest import kept_seed

ROOT = Path(__file__).resolve().parents[2]


def test_welch_interval_equal_variances_by_hand():
    # diff −3; se² = 1/3 + 1/3; dof = (2/3)² / (2 · (1/3)² / 2) = 4; t(0.975, 4) = 2.7764 from a t table.
    interval = welch_interval([1.0, 2.0, 3.0], [4.0, 5.0, 6.0])
    half = 2.7764 * math.sqrt(2 / 3)
    assert interval.estimate == pytest.approx(-3.0)
    assert interval.dof == pytest.approx(4.0)
    assert interval.low == pytest.approx(-3.0 - half, abs=1e-3)
    assert interval.high == pytest.approx(-3.0 + half, abs=1e-3)
    assert interval.excludes_zero


def test_welch_interval_unequal_variances_by_hand():
    # s_a²/n_a = (5/3)/4, s_b²/n_b = 0.125/2; dof = se⁴ / ((s_a²/n_a)²/3 + (s_b²/n_b)²/1).
    a, b = [1.0, 2.0, 3.0, 4.0], [2.0, 2.5]
    var_a, var_b = (5 / 3) / 4, 0.125 / 2
    interval = welch_interval(a, b)
    assert interval.estimate == pytest.approx(0.25)
    assert interval.dof == pytest.approx((var_a + var_b) ** 2 / (var_a**2 / 3 + var_b**2 / 1))
    assert not interval.excludes_zero
    assert welch_interval([1.0], b) is None  # one seed: no variance, no interval
    constant = welch_interval([2.0, 2.0], [1.0, 1.0])
    assert (constant.low, constant.high) == (1.0, 1.0)


def test_gap_closed_by_hand():
    assert gap_closed(80.0, 70.0, 90.0) == pytest.approx(0.5)
    assert gap_closed(65.0, 70.0, 90.0) == pytest.approx(-0.25)
    assert gap_closed(80.0, 70.0, 70.0) is None
    assert gap_closed(None, 70.0, 90.0) is None


def test_no_rank_column_where_overlapping_intervals_cannot_be_grouped():
    """a beats b clearly; noisy (mean 7, std 5) overlaps both. Overlap chains a to b through noisy, so a group of
    overlapping rows would hold all three, though a and b are separated; a rank of 1 + the rows separated above
    gave noisy rank 1 below a row of rank 1 and above b's 2 only by luck of the order. The table shows no rank: it
    is in mean order, and the separated pair is said by its own interval."""
    rows = [MethodRuns("student alone", "", best=[6.0, 6.1, 5.9]), MethodRuns("b", "", best=[5.0, 5.1, 4.9]),
            MethodRuns("noisy", "", best=[7.0, 12.0, 2.0]), MethodRuns("a", "", best=[10.0, 10.1, 9.9])]
    table = method_table(rows, teacher_top1=None).splitlines()
    assert table[0].startswith("| method | seeds |") and "rank" not in table[0]
    assert [line.split(" | ")[0].removeprefix("| ") for line in table[2:]] == ["a", "noisy", "student alone", "b"]
    gains = {line.split(" | ")[0].removeprefix("| "): line.split(" | ")[4] for line in table[2:]}
    assert gains["a"].startswith("+4.00 [") and gains["a"].endswith("*") and gains["b"].endswith("*")
    assert not gains["noisy"].endswith("*")  # +1 with an interval across 0: above b, and no rank says otherwise
    pairs = real_differences({r.method: r.best for r in rows if r.method != "student alone"})
    assert [(better, worse) for better, worse, _ in pairs] == [("a", "b")]
    assert pairs[0][2].estimate == pytest.approx(5.0)


def test_table_and_text_say_which_differences_are_real():
    rows = [MethodRuns("student alone", "stage=student", best=[80.0, 80.2, 79.8], last=[79.0, 79.5, 79.2]),
            MethodRuns("kd", "loss=kd", best=[82.0, 82.2, 81.8], last=[81.0, 81.1, 81.2], seconds=[60, 90, 120]),
            MethodRuns("rkd", "loss=rkd", best=[75.0, 85.0, 80.0])]
    table = method_table(rows, teacher_top1=90.0)
    kd_line = next(line for line in table.splitlines() if "| kd |" in line)
    assert "82.00 ± 0.20" in kd_line and "81.10 ± 0.10" in kd_line  # best and last epoch
    assert "+2.00 [" in kd_line and "*" in kd_line and "| 0.20 |" in kd_line  # gain, separated; gap closed 2/10
    assert "1.5 min" in kd_line  # median time per run
    published = method_table(rows, teacher_top1=90.0, published={"kd": 73.33})
    assert "published (%)" in published and next(line for line in published.splitlines() if "| kd |" in line
                                                  ).endswith("| 73.33 |")
    text = "\n".join(differences_text(rows))
    assert "Better than the student alone** (interval above 0): kd" in text
    assert "contains 0): rkd" in text


def test_learning_curve(tmp_path):
    for seed, values in enumerate([(0.5, 0.7), (0.6, 0.9)]):
        (tmp_path / str(seed) / "csv").mkdir(parents=True)
        rows = ["epoch,step,train/loss_step,val/acc_top1"]  # CSVLogger: train and val rows apart, blanks between
        for epoch, value in enumerate(values):
            rows += [f"{epoch},{epoch * 10 + 9},1.0,", f"{epoch},{epoch * 10 + 9},,{value}"]
        (tmp_path / str(seed) / "csv" / "metrics.csv").write_text("\n".join(rows) + "\n")
    curve = learning_curve([tmp_path / "0", tmp_path / "1"])
    assert [(epoch, round(mean, 6)) for epoch, mean, _ in curve] == [(0, 55.0), (1, 80.0)]


def test_each_out_dir_rewrites_its_own_section_and_keeps_the_rest(tmp_path):
    """One document holds several settings: each out-dir's section between its markers, prose around them."""
    rows = [MethodRuns("student alone", "stage=student", best=[80.0, 80.2], record={"commit": "abc1234"}),
            MethodRuns("kd", "loss=kd", best=[82.0, 82.2], record={"commit": "abc1234"}, note="ce 0.1, kd 0.9")]
    teacher = {"teacher": {"architecture": "small_cnn", "params": 94186, "test_acc_top1": 0.9}}
    setting = {"data": "Fashion-MNIST", "experiment": "fmnist_benchmark", "epochs": 15, "teacher_epochs": 60,
               "extra": []}
    doc = tmp_path / "benchmarks.md"
    write_doc(doc, rows, teacher, tmp_path / "benchmark", "python -m scripts.bench methods", setting)
    first = doc.read_text()
    assert first.startswith("# Benchmark: distillation methods on Fashion-MNIST\n")
    assert "<!-- method-table:benchmark:start -->\n## Fashion-MNIST, 15 epochs\n" in first
    assert "at **90.00 %** test top-1; student alone **80.10 ± 0.14 %**" in first and "| kd |" in first
    assert first.endswith("</details>\n<!-- method-table:benchmark:end -->\n")

    # Prose written around the section, and a second out-dir's section (appended), are kept by later writes.
    doc.write_text(first.replace("# Benchmark: distillation methods on Fashion-MNIST\n",
                                 "# Benchmark\n\nWritten by hand.\n") + "\n## Deep mutual learning\n\nkept\n")
    write_doc(doc, rows, teacher, tmp_path / "benchmark_e60", "python -m scripts.bench methods --epochs 60",
              {**setting, "epochs": 60, "extra": ["teacher_cache.augmentations=true"]})
    rows[1].best = [83.0, 83.2]
    write_doc(doc, rows, teacher, tmp_path / "benchmark", "python -m scripts.bench methods", setting)
    text = doc.read_text()
    assert text.startswith("# Benchmark\n\nWritten by hand.\n") and "## Deep mutual learning\n\nkept\n" in text
    assert text.count("<!-- method-table:benchmark:start -->") == 1 and "83.10 ± 0.14" in text
    assert "82.10 ± 0.14" in text.split("<!-- method-table:benchmark_e60:start -->")[1]  # the other one untouched
    assert "`experiment=fmnist_benchmark` with `teacher_cache.augmentations=true`" in text

    doc.write_text(text.replace("<!-- method-table:benchmark:end -->", ""))
    with pytest.raises(SystemExit, match="method-table:benchmark:start --> but no <!-- method-table:benchmark:end"):
        write_doc(doc, rows, teacher, tmp_path / "benchmark", "python -m scripts.bench methods", setting)


def write_val_curve(folder: Path, values: list[float]) -> Path:
    """A CSVLogger metrics.csv with one validation top-1 (a fraction) per epoch."""
    (folder / "csv").mkdir(parents=True)
    rows = ["epoch,step,val/acc_top1"] + [f"{epoch},{epoch * 10 + 9},{value}" for epoch, value in enumerate(values)]
    (folder / "csv" / "metrics.csv").write_text("\n".join(rows) + "\n")
    return folder


def test_every_rows_curve_at_quarters_of_the_schedule(tmp_path):
    # 8 epochs: marks at epochs 2, 4, 6, 8. KD leads early and ends level with the student alone.
    alone = [write_val_curve(tmp_path / "alone" / str(s), [0.5, 0.6, 0.6, 0.7, 0.7, 0.8, 0.8, 0.85 + s / 100])
             for s in range(2)]
    kd = [write_val_curve(tmp_path / "kd" / str(s), [0.7, 0.8, 0.8, 0.8, 0.8, 0.84, 0.84, 0.86]) for s in range(2)]
    rows = [MethodRuns("student alone", "", best=[85.0, 86.0], run_dirs=alone),
            MethodRuns("kd", "", best=[86.0, 86.0], run_dirs=kd),
            MethodRuns("born-again", "", best=[80.0], run_dirs=[tmp_path / "no_csv"])]  # no curve: no line
    lines = curves_table(rows, epochs=8)
    assert lines[0] == "| method | epoch 2 | epoch 4 | epoch 6 | epoch 8 |"
    assert lines[2:] == ["| kd | 80.00 | 80.00 | 84.00 | 86.00 |",
                         "| student alone | 60.00 | 70.00 | 80.00 | 85.50 |"]
    assert curves_table(rows, epochs=15)[0] == "| method | epoch 4 | epoch 8 | epoch 11 | epoch 15 |"


def test_the_student_alone_curve_to_the_end_of_each_of_its_schedules(tmp_path):
    """The plateau table: the student alone at 30 and 60 epochs, each to its own end; other rows and the
    matched-size rows (another student) are not in it."""
    short = [write_val_curve(tmp_path / "a" / str(s), [0.5 + e / 100 for e in range(12)]) for s in range(2)]
    long = [write_val_curve(tmp_path / "b" / str(s), [0.5 + e / 100 + s / 100 for e in range(17)]) for s in range(2)]
    other = [write_val_curve(tmp_path / "c" / "0", [0.9] * 12)]
    rows = [MethodRuns("student alone", "", best=[80.0], run_dirs=short),
            MethodRuns("student alone, 17 epochs", "", best=[81.0], run_dirs=long),
            MethodRuns("student alone matched simkd params", "", best=[82.0], run_dirs=other),
            MethodRuns("kd", "", best=[83.0], run_dirs=other)]
    lines = plateau_table(rows, every=5)
    assert lines[0] == "| epoch | student alone | student alone, 17 epochs |"
    assert lines[2] == "| 1 | 50.00 ± 0.00 | 50.50 ± 0.71 |"
    assert lines[4] == "| 10 | 59.00 ± 0.00 | 59.50 ± 0.71 |"
    assert lines[5] == "| 15 |  | 64.50 ± 0.71 |"  # the 12-epoch row has ended
    assert lines[6] == "| 17 |  | 66.50 ± 0.71 |" and len(lines) == 7
    assert plateau_table(rows[2:]) == []


def test_each_teacher_of_a_setting_has_its_own_section(tmp_path):
    assert section_name(tmp_path / "benchmark_e60") == "benchmark_e60"
    assert section_name(tmp_path / "benchmark_strong" / "teacher_seed1") == "benchmark_strong/teacher_seed1"
    args = methods.parse_args(["--setting", "strong", "--teacher-seed", "1"])
    assert methods.section_title(args) == "Fashion-MNIST, strong teacher seed 1, 30 epochs"
    assert methods.section_title(methods.parse_args([])) == "Fashion-MNIST, 15 epochs"


def test_only_the_default_folder_replaces_the_published_table(tmp_path):
    """A grid of another schedule (its own --out-dir) writes its table beside its runs, not over docs/."""
    args = methods.parse_args([])
    assert args.out_dir == ROOT / "outputs" / "benchmark"
    assert methods.doc_path(args) == ROOT / "docs" / "benchmarks.md"
    args = methods.parse_args(["--cifar100"])
    assert args.out_dir == ROOT / "outputs" / "benchmark_cifar100"
    assert methods.doc_path(args) == ROOT / "docs" / "cifar100_benchmark.md"
    # The strong setting has two teachers of one recipe: a folder (and a section of docs/benchmarks.md) each.
    args = methods.parse_args(["--setting", "strong", "--teacher-seed", "1"])
    assert args.out_dir == ROOT / "outputs" / "benchmark_strong" / "teacher_seed1"
    assert methods.doc_path(args) == ROOT / "docs" / "benchmarks.md"
    assert "teacher.train.seed=1" in training.common_overrides(args)
    args = methods.parse_args([])
    args.out_dir = tmp_path / "benchmark_e60"
    assert methods.doc_path(args) == tmp_path / "benchmark_e60" / "benchmarks.md"
    args.out_dir, args.mini = ROOT / "outputs" / "benchmark", True  # a miniature never writes docs/ either
    assert methods.doc_path(args) == ROOT / "outputs" / "benchmark" / "benchmarks.md"
    args.doc = tmp_path / "chosen.md"
    assert methods.doc_path(args) == tmp_path / "chosen.md"


def test_warm_ups_are_scaled_to_the_schedule_asked_for_not_the_settings_default():
    """--epochs 60 on the 15-epoch setting: DKD's 20 warm-up epochs of 240 become 5, CTKD's 10 become 2."""
    def overrides(epochs: int) -> dict[str, list[str]]:
        return {m.name: m.overrides for m in methods.grid(FMNIST, epochs)}

    assert "loss.dkd.warmup_epochs=1" in overrides(15)["dkd"]  # 20 · 15 / 240 = 1.25
    assert "loss.dkd.warmup_epochs=5" in overrides(60)["dkd"]  # 20 · 60 / 240
    assert "loss.ctkd.lambda_epochs=2" in overrides(60)["ctkd"]  # 10 · 60 / 240 = 2.5, rounded half to even
    assert overrides(240)["dkd"] == ["loss=dkd"]  # the reference schedule keeps the preset's own count


def test_overrides_written_after_methods_are_overrides_not_method_names():
    args = methods.parse_args(["a=1", "--epochs", "60", "--methods", "student alone", "kd",
                                 "teacher_cache.augmentations=true", "+x.y=2"])
    assert args.methods == ["student alone", "kd"]
    assert args.extra == ["a=1", "teacher_cache.augmentations=true", "+x.y=2"]
    assert args.epochs == 60
    between = methods.parse_args(["a=1", "--epochs", "60", "loss.kd.temperature=2", "--out-dir", "x",
                                    "--methods", "kd"])
    assert between.extra == ["a=1", "loss.kd.temperature=2"] and between.methods == ["kd"]


def test_the_tables_command_is_the_whole_grids_not_the_sittings_methods_and_adds_its_optional_rows():
    # A sitting that trained two rows with --methods did not make the table; the same command without them
    # trains every missing row. The optional rows (trained only when named) follow as their own command.
    argv = ["teacher_cache.augmentations=true", "--epochs", "60", "--methods", "mlkd", "dist",
            "student alone matched simkd params", "x=1", "--results", "docs/r"]
    grid_rows = ["student alone", "kd", "mlkd", "dist", "simkd"]
    base = "python -m scripts.bench methods teacher_cache.augmentations=true --epochs 60 x=1 --results docs/r"
    assert table_command(argv, grid_rows, grid_rows) == base
    assert table_command(argv, grid_rows, [*grid_rows, "student alone matched simkd params"],
                         ["student alone matched simkd params"]) == (
        f"{base} && {base} --methods 'student alone matched simkd params'")
    assert table_command(["--setting", "strong"], [], []) == "python -m scripts.bench methods --setting strong"


def test_the_command_of_a_table_of_some_rows_names_them_and_tuned_rows_come_from_tune():
    grid_rows = ["student alone", "kd", "dkd", "mlkd", "simkd"]
    base = "python -m scripts.bench methods --setting strong --epochs 60"
    # A table of three rows by design: the one command that makes it names them, whatever a sitting named.
    argv = ["--setting", "strong", "--epochs", "60", "--methods", "kd"]
    assert table_command(argv, grid_rows, ["dkd", "kd", "student alone"]) == (
        f"{base} --methods dkd kd 'student alone'")
    # A row at a weight chosen on validation needs --tune (its candidates and choice), which also trains its
    # reference row: neither is named in --methods, and the whole grid needs no --methods at all.
    tuned = [*grid_rows, "mlkd, weight chosen on validation"]
    argv = ["--setting", "strong", "--epochs", "60", "--tune", "mlkd", "--methods", "dkd"]
    assert table_command(argv, grid_rows, tuned, tuned=["mlkd"]) == f"{base} --tune mlkd"
    assert table_command(argv, grid_rows, ["student alone", "mlkd, weight chosen on validation", "mlkd"],
                         tuned=["mlkd"]) == f"{base} --methods 'student alone' --tune mlkd"


def test_a_row_every_seed_of_which_stopped_on_a_config_error_is_shown_as_cannot_run(tmp_path):
    def seed_folder(method: str, seed: int, error: str | None = None, finished: bool = False) -> None:
        folder = tmp_path / method / str(seed)
        folder.mkdir(parents=True)
        if error:
            (folder / "error.json").write_text(json.dumps({"error": error}))
        if finished:
            (folder / "metrics.json").write_text(json.dumps({"student": {"test_acc_top1": 0.8}, "seconds": 60}))

    narrow = "ConfigError: loss.fsp needs equal channel counts in each pair of layers"
    for seed in range(3):
        seed_folder("fsp", seed, narrow)
        seed_folder("crd", seed, "RuntimeError: out of memory" if seed == 0 else narrow)  # a crash: not "cannot run"
        seed_folder("kdsvd", seed, narrow if seed < 2 else None)  # seed 2 not tried yet
        seed_folder("kd", seed, finished=True)
    assert bench_rows.config_error(tmp_path / "fsp") == "loss.fsp needs equal channel counts in each pair of layers"
    assert [bench_rows.config_error(tmp_path / m) for m in ("crd", "kdsvd", "kd", "nst")] == ["", "", "", ""]

    rows_asked = [methods.Method(name, [f"loss={name}"]) for name in ("kd", "fsp", "crd", "kdsvd")]
    rows = {row.method: row for row in bench_rows.collect(rows_asked, tmp_path)}
    assert set(rows) == {"kd", "fsp"} and rows["fsp"].not_applicable and not rows["kd"].not_applicable
    table = method_table(list(rows.values()), teacher_top1=90.0)
    assert "| fsp | 0 | — | — | cannot run here (below) | — | — | — | — | — |" in table
    assert table.index("| kd |") < table.index("| fsp |")  # rows with numbers first


def test_the_table_shows_each_rows_training_top1_at_its_last_epoch(tmp_path):
    """The column the rule for a second row reads: the last training epoch's train/acc_top1 of each seed's csv (a
    validation row and a training row of an earlier epoch are not it); a seed without a csv is left out."""
    def seed(folder: Path, top1: float, train_accs: list[float] | None) -> None:
        kept_seed(folder, top1, 6274, None)
        if train_accs is not None:
            (folder / "csv").mkdir()
            rows = [f"{epoch},,{acc}" for epoch, acc in enumerate(train_accs)] + [f"{len(train_accs) - 1},0.9,"]
            (folder / "csv" / "metrics.csv").write_text("epoch,val/acc_top1,train/acc_top1\n" + "\n".join(rows) + "\n")

    seed(tmp_path / "student_alone" / "0", 0.90, [0.5, 0.91])
    seed(tmp_path / "student_alone" / "1", 0.91, [0.6, 0.93])
    seed(tmp_path / "mlkd" / "0", 0.33, [0.2, 0.30])
    seed(tmp_path / "mlkd" / "1", 0.32, None)
    rows = bench_rows.collect([methods.Method("student alone", ["stage=student"]),
                               methods.Method("mlkd", ["loss=mlkd"])], tmp_path)
    assert {row.method: row.train_top1 for row in rows} == {"student alone": [91.0, 93.0], "mlkd": [30.0]}
    lines = {line.split(" | ")[0]: line.split(" | ") for line in method_table(rows, teacher_top1=94.0).splitlines()}
    column = lines["| method"].index("train top-1 last epoch (%)")
    assert lines["| student alone"][column] == "92.00 ± 1.41" and lines["| mlkd"][column] == "30.00 ± 0.00"
