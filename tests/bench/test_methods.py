"""The method table (python -m scripts.bench methods): its statistics against hand computations, the document it
writes, and a resumable miniature."""

import json
import math
import shutil
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
    larger_text,
    learning_curve,
    method_table,
    plateau_table,
    section_name,
    section_text,
    write_doc,
)
from scripts.bench.grid import FMNIST, FMNIST_COST
from scripts.bench.results import size_of, width_form
from scripts.bench.stats import gap_closed, real_differences, welch_interval
from tests.bench.conftest import kept_seed, run_config

ROOT = Path(__file__).resolve().parents[2]
FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


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
    base = "python -m scripts.bench methods teacher_cache.augmentations=true --epochs 60 x=1 --results docs/r"
    assert methods.table_command(argv, []) == base
    assert methods.table_command(argv, ["student alone matched simkd params"]) == (
        f"{base} && {base} --methods 'student alone matched simkd params'")
    assert methods.table_command(["--setting", "strong"], []) == "python -m scripts.bench methods --setting strong"


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
    assert "| fsp | 0 | — | — | cannot run here (below) | — | — | — | — |" in table
    assert table.index("| kd |") < table.index("| fsp |")  # rows with numbers first


@pytest.mark.skipif(not (FASHION_MNIST / "train-images-idx3-ubyte.gz").is_file(), reason="no Fashion-MNIST here")
def test_benchmark_miniature_tunes_and_resumes(tmp_path, script_main):
    """2 rows and KD's weight chosen on validation (the reference, 4 candidates, the choice), 1 seed, 1 epoch of 3
    batches; the second call finds every run finished and trains nothing, and so does a third on a "new machine"
    that has only the --results folder. One teacher serves both parts (the tune's own miniature cost a minute)."""
    out, results = tmp_path / "bench", tmp_path / "results"
    where = ["--mini", "--out-dir", str(out), "--cache-dir", str(tmp_path / "cache"), "--results", str(results)]
    args = [*where, "--methods", "student alone", "kd", "--tune", "kd"]
    first = script_main(methods, *args)  # the script in-process; each run still a distill-train process
    assert "tuning: kd (kd at 0.3, 0.09, 0.03, 0.009; seed 0)" in first
    summary = json.loads((out / "kd" / "0" / "metrics.json").read_text())
    assert 0 <= summary["metrics"]["test_last/acc_top1"] <= 1 and summary["seconds"] > 0
    choice = json.loads((out / "tune_kd" / "choice.json").read_text())
    scores = {c["weight"]: c["best_val_acc_top1"] for c in choice["candidates"]}
    assert len(scores) == 5 and scores[choice["chosen"]] == max(scores.values())
    for entry in choice["candidates"]:  # each score is its run's own, at its own weight
        run = out / entry["run"]
        student = json.loads((run / "metrics.json").read_text())["student"]
        assert student["best_val_acc_top1"] == entry["best_val_acc_top1"]
        assert json.loads((run / "run_config.json").read_text())["loss"]["kd"]["weight"] == entry["weight"]
    tuned_row_trained = (out / "kd_weight_chosen_on_validation" / "0" / "metrics.json").is_file()
    assert tuned_row_trained == (choice["chosen"] != 0.9)
    assert f"trained: {2 + tuned_row_trained} method(s); 0 read back" in first  # the reference row counts too
    records = json.loads((out / "records.json").read_text())
    assert {"teacher", "student alone", "kd", "tune kd"} <= set(records) and all(r["commit"] for r in records.values())
    doc = (out / "benchmarks.md").read_text()
    assert "top-1 best val epoch" in doc and "top-1 last epoch" in doc and "| kd |" in doc
    assert "### Every row during training" in doc and "| method | epoch 1 |" in doc
    assert "### Weights chosen on validation" in doc
    assert ("| kd, weight chosen on validation |" in doc) == tuned_row_trained
    folders = sorted(p.relative_to(out) for p in out.rglob("*") if p.is_dir())

    second = script_main(methods, *args)
    assert "trained: 0 method(s)" in second and "training:" not in second and "tuning:" not in second
    assert sorted(p.relative_to(out) for p in out.rglob("*") if p.is_dir()) == folders
    assert json.loads((results / "tune_kd" / "choice.json").read_text()) == choice

    # Every row of the out-dir is kept, also by a call that chose other rows: kd's kept files are gone, a call
    # for the student alone (which trains nothing) keeps them again.
    shutil.rmtree(results / "kd")
    script_main(methods, *where, "--methods", "student alone")
    assert (results / "kd" / "0" / "metrics.json").is_file()

    # A new machine: no out-dir, no teacher cache, only the kept results (committed). Nothing trains, not even
    # the teacher or the candidates, and the table is the same document.
    shutil.rmtree(out)
    shutil.rmtree(tmp_path / "cache")
    third = script_main(methods, *args)
    assert "trained: 0 method(s)" in third and "training:" not in third and "tuning:" not in third
    assert (out / "benchmarks.md").read_text() == doc
    assert not list(results.rglob("*.ckpt"))  # weights of the teacher only, no checkpoints

    # A row missing on that new machine trains against the kept teacher (read from the cache it was put back
    # into), not against a teacher trained again.
    shutil.rmtree(out / "kd")
    shutil.rmtree(results / "kd")
    assert "trained: 1 method(s)" in script_main(methods, *args)
    log = (out / "kd.log").read_text()
    assert "reused cached weights" in log and "no cached weights" not in log


def test_plan_lists_every_preset_and_scheme_and_trains_nothing(tmp_path, script_main):
    stdout = script_main(methods, "--plan", "--out-dir", str(tmp_path / "bench"))
    rows = {line.split("  ")[0].strip(): line for line in stdout.splitlines()[2:-1]}
    presets = {p.stem for p in (ROOT / "conf" / "loss").glob("*.yaml")} - {"ce", "kd_per_teacher"}
    assert presets | {"student alone", "dml x2", "born-again x2, kd"} <= set(rows)
    assert "loss.dkd.warmup_epochs=1" in rows["dkd"]  # 20 of 240 epochs -> 1 of 15
    assert "hint_only_epochs" not in rows["fitnet"]  # 0 (no init stage) stays 0
    assert "estimated time for what is left:" in stdout
    assert not (tmp_path / "bench").exists()


def test_plan_of_the_strong_setting_lists_the_rows_chosen_before_it_ran(tmp_path, script_main):
    """The strong setting's rows are the issue's list, fixed in grid.STRONG; each teacher seed has its folder,
    and its runs distil from that teacher (teacher.train.seed in every run's overrides)."""
    stdout = script_main(methods, "--setting", "strong", "--teacher-seed", "1", "--plan",
                         "--out-dir", str(tmp_path / "bench"))
    assert stdout.startswith("setting: experiment=fmnist_strong, 30 student epochs of 100 batches, 3 seeds, "
                             "teacher (teacher.train.seed=1) 150 epochs (to train)")
    rows = {line.split("  ")[0].strip() for line in stdout.splitlines()[2:-1]}
    assert rows == {"student alone", "student alone, 60 epochs", "kd", "kd_ls", "dkd", "dist", "mlkd", "simkd",
                    "crd", "reviewkd", "fitnet", "ofd", "ensemble (resnet20 seeds 0 + 1) kd",
                    "takd chain resnet20 > resnet14 > resnet8, kd"}
    hours = float(stdout.split("estimated time for what is left: ")[1].split(" h")[0])
    assert 5 < hours < 20  # the 2-core costs of resnet8/resnet20 steps, not the small_cnn ones (about 1 h)
    assert not (tmp_path / "bench").exists()
    args = methods.parse_args(["--setting", "strong", "--teacher-seed", "1"])
    config = training.composed(args)
    assert (config.teacher.name, config.student.name, config.teacher.train.seed) == ("cifar_resnet20",
                                                                                    "cifar_resnet8", 1)
    with pytest.raises(SystemExit):
        methods.parse_args(["--setting", "strong", "--teacher-seed", "2"])  # two teachers: seeds 0 and 1


def test_plan_counts_no_teacher_pass_for_rows_the_output_cache_serves_but_counts_its_build(tmp_path, capsys):
    """KD reads cached logits once teacher_cache.augmentations=true (50 crop/flip variants an image); FitNet reads
    teacher features, so its teacher runs live either way."""
    def plan(*overrides: str) -> tuple[float, dict[str, float], str]:
        args = methods.parse_args([*overrides, "--epochs", "60", "--out-dir", str(tmp_path), "--plan"])
        total = methods.plan([m for m in methods.grid(args.setting, 60) if m.name in ("kd", "fitnet")], args)
        out = capsys.readouterr().out
        rows = {line.split()[0]: float(line.split()[2]) for line in out.splitlines()
                if line.startswith(("kd ", "fitnet "))}
        return total, rows, out

    live_total, live, live_out = plan()
    cached_total, cached, cached_out = plan("teacher_cache.augmentations=true")
    assert live["kd"] == live["fitnet"] == cached["fitnet"] and cached["kd"] < live["kd"]
    assert "read the teacher-output cache" not in live_out
    assert "1 row(s) read the teacher-output cache (50 variant(s) an image)" in cached_out
    # 3 seeds x 60 epochs x 100 batches of teacher passes saved; one build of 50 x 55,000 images (batches of 128)
    cost = FMNIST_COST
    build, saved = cost["cache_batch"] * 50 * 55_000 / 128, 3 * 60 * 100 * cost["teacher_forward"]
    assert cached_total - live_total == pytest.approx(build - saved)


def test_plan_prices_a_scheme_by_its_runs_and_the_teachers_and_caches_it_builds(tmp_path, capsys):
    """With the output cache, TAKD's two links read cached logits, and each seed builds its assistant's cache;
    the ensemble trains its second teacher and builds the two teachers' cache once, in the row's first seed."""
    cost = FMNIST_COST
    args = methods.parse_args(["teacher_cache.augmentations=true", "--epochs", "60", "--out-dir", str(tmp_path),
                                 "--plan"])
    grid = {m.name: m for m in methods.grid(args.setting, 60)}
    build = cost["cache_batch"] * 50 * 55_000 / 128
    teacher = cost["run"] + 60 * (100 * cost["teacher_step"] + cost["validation"])
    takd_seed = 2 * cost["run"] + 60 * (100 * 3.0 * cost["student_step"] + 2 * cost["validation"]) + 0.13 * build
    ensemble_seed = cost["run"] + 60 * (100 * cost["student_step"] + cost["validation"])
    takd, ensemble = grid["takd chain w32 > w16 > w8, kd"], grid["ensemble (w32 + w24) kd"]
    # Nothing done: the benchmark teacher, its cache for TAKD's first links, then the rows.
    assert methods.plan([takd], args) == pytest.approx(teacher + build + 3 * takd_seed)
    assert methods.plan([ensemble], args) == pytest.approx(teacher + 0.56 * teacher + 1.56 * build
                                                             + 3 * ensemble_seed)
    # One seed of each done: two seeds' links and assistants' caches are left; the ensemble's teachers are not.
    for method in (takd, ensemble):
        seed = tmp_path / methods.folder_name(method.name) / "0"
        seed.mkdir(parents=True)
        (seed / "metrics.json").write_text("{}")
    assert methods.plan([takd], args) == pytest.approx(teacher + 2 * takd_seed)
    assert methods.plan([ensemble], args) == pytest.approx(teacher + 2 * ensemble_seed)
    assert "read the teacher-output cache" in capsys.readouterr().out


def test_an_out_dir_of_another_schedule_is_refused_before_anything_runs(tmp_path, script_main):
    out = tmp_path / "bench"
    out.mkdir()
    (out / "setting.json").write_text(json.dumps({"experiment": "fmnist_benchmark", "epochs": 15, "batches": 100,
                                                  "teacher_epochs": 60, "extra": []}))
    assert "estimated time for what is left:" in script_main(methods, "--plan", "--out-dir", str(out))
    with pytest.raises(SystemExit, match=r"holds runs of another setting \(epochs 15 there, 30 asked\)"):
        script_main(methods, "--plan", "--out-dir", str(out), "--epochs", "30")

    # The same for kept results: refused before a single kept file lands in the (new) out-dir.
    results, fresh = tmp_path / "results", tmp_path / "fresh"
    shutil.copytree(out, results)
    (results / "kd" / "0").mkdir(parents=True)
    (results / "kd" / "0" / "metrics.json").write_text("{}")
    with pytest.raises(SystemExit, match=rf"{results} holds runs of another setting \(epochs 15 there, 30 asked\)"):
        script_main(methods, "--plan", "--out-dir", str(fresh), "--results", str(results), "--epochs", "30")
    assert not fresh.exists()


def test_every_row_states_its_deployed_students_size_and_a_larger_one_is_marked(kept_runs, tmp_path):
    """Read from the kept files (test_results.py has the counts by hand): SimKD's exported student is the width-8
    trunk, a projector and the teacher's classifier. A row trained but whose runs are gone (dist) stays a row."""
    asked = [methods.Method(name, [f"loss={name}"]) for name in ("student alone", "kd", "simkd", "dist")]
    rows = bench_rows.collect(asked, kept_runs)
    by_name = {row.method: row for row in rows}
    assert by_name["simkd"].params == [54_850, 54_850] and by_name["simkd"].macs == [2_817_408, 2_817_408]
    assert by_name["kd"].params == by_name["student alone"].params == [6274, 6274]
    table = method_table(rows, teacher_top1=90.0)
    lines = {line.split(" | ")[0].removeprefix("| "): line for line in table.splitlines()[2:]}
    assert "| 54,850 † | 2.82 M † |" in lines["simkd"]
    assert "| 6,274 | 0.51 M |" in lines["kd"] and "| 6,274 | 0.51 M |" in lines["student alone"]
    assert lines["dist"].startswith("| dist | 0 | — | — | no kept runs (below) | — | — | — | — | `abc1234` |")
    assert list(lines) == ["simkd", "kd", "student alone", "dist"]

    teacher = {"teacher": {"architecture": "small_cnn", "params": 94186, "test_acc_top1": 0.9}}
    setting = {"data": "Fashion-MNIST", "experiment": "fmnist_benchmark", "epochs": 60, "teacher_epochs": 60}
    text = section_text(rows, teacher, "python -m scripts.bench methods", setting)
    assert ("† The deployed student (what the run exports and measures) is larger than the student alone's (6,274 "
            "parameters, 0.51 M MACs): the row's gain over the student alone is not a gain at equal size.") in text
    assert ('- **simkd** (8.7x the parameters, 5.5x the MACs): the student alone at matched size is not trained: add '
            '`--methods "student alone matched simkd params" "student alone matched simkd macs"`') in text
    assert "- **kd**" not in text
    assert "### Rows with no kept runs" in text
    assert ("- **dist**: records.json has its training (commit `abc1234`, exit 0, finished 2026-11-29 13:30:02), "
            "but no seed of it finished here: dist/ holds no metrics.json") in text

    # The optional rows: the student alone at the width closest to SimKD's student in parameters, and in MACs.
    optional = bench_rows.matched_rows(rows)
    assert [(m.name, m.overrides) for m in optional] == [
        ("student alone matched simkd params", ["stage=student", "student.kwargs.width=24"]),
        ("student alone matched simkd macs", ["stage=student", "student.kwargs.width=19"])]
    assert optional[0].note == ("small_cnn width 24: 53,362 parameters, 4.23 M MACs, the width closest to simkd's "
                                "deployed student in parameters (54,850)")
    # Once one has runs, it is a row (unmarked: it is the comparison) and SimKD's gain over it is given.
    for seed, top1 in enumerate([0.850, 0.852]):
        kept_seed(kept_runs / "student_alone_matched_simkd_params" / str(seed), top1, 53_362,
                  run_config(tmp_path, "student", width=24))
    rows += bench_rows.collect(optional, kept_runs)
    matched_line = next(line for line in method_table(rows, 90.0).splitlines() if "matched simkd params" in line)
    assert "| 53,362 | 4.23 M |" in matched_line
    assert larger_text(rows)[2].startswith(
        "- **simkd** (8.7x the parameters, 5.5x the MACs): +1.10 [") and larger_text(rows)[2].endswith(
        "over the student alone of matched parameters (53,362 parameters, 4.23 M MACs); the student alone at matched "
        'size is not trained: add `--methods "student alone matched simkd macs"` to the command under *How this '
        "table was made* (optional rows of `--plan`).")


def test_a_cifar_resnet_student_is_matched_in_size_through_its_width_form(tmp_path):
    """cifar_resnet8 has no width keyword; its matched rows are cifar_resnet of depth 8 at another width (width 16
    is the same network), given as overrides the strong setting's config accepts."""
    assert size_of({"student": {"name": "cifar_resnet8", "kwargs": {}}, **STRONG_RUN}).params == size_of(
        {"student": width_form({"name": "cifar_resnet8", "kwargs": {}}), **STRONG_RUN}).params == 77_754
    config = {"student": {"name": "cifar_resnet8", "kwargs": {}}, **STRONG_RUN}
    baseline = MethodRuns("student alone", "", best=[90.0], run_dirs=[tmp_path / "alone"], params=[77_754],
                          macs=[size_of(config).macs])
    (tmp_path / "alone").mkdir()
    (tmp_path / "alone" / "run_config.json").write_text(json.dumps(config))
    simkd = MethodRuns("simkd", "", best=[91.0], params=[120_000], macs=[2 * size_of(config).macs])
    optional = bench_rows.matched_rows([baseline, simkd])
    overrides = dict((m.name, m.overrides) for m in optional)["student alone matched simkd params"]
    assert overrides[:2] == ["stage=student", "student.name=cifar_resnet"]
    composed = training.composed(methods.parse_args(["--setting", "strong"]), *overrides)
    student = {"name": composed.student.name, "kwargs": dict(composed.student.kwargs)}
    assert student["kwargs"]["depth"] == 8 and student["kwargs"]["width"] == int(overrides[-1].split("=")[1])
    assert abs(size_of({"student": student, **STRONG_RUN}).params - 120_000) < 15_000  # the closest width


# What size_of reads of a strong-setting run besides the student: a one-channel 28x28 input, 10 classes.
STRONG_RUN = {"stage": "student", "data": {"_target_": "distill.data.FashionMNISTDataModule", "root": "/nonexistent"},
              "teacher": {"name": "cifar_resnet20", "kwargs": {}, "pretrained": False, "weights": None},
              "loss": {"ce": {"weight": 1.0}}}


def test_plan_lists_the_matched_rows_as_optional_and_trains_them_only_when_named(kept_runs, script_main):
    stdout = script_main(methods, "--plan", "--out-dir", str(kept_runs))
    line = next(line for line in stdout.splitlines() if line.startswith("student alone matched simkd params"))
    assert " 0/3  optional  stage=student student.kwargs.width=24" in line and "only when --methods names it" in line
    assert "student alone matched simkd macs" in stdout
    named = script_main(methods, "--plan", "--out-dir", str(kept_runs), "--methods", "student alone matched simkd macs")
    line = next(line for line in named.splitlines() if line.startswith("student alone matched simkd macs"))
    assert "optional" not in line and float(line.split()[6]) > 0  # estimated and counted, like a grid row
    assert "student alone matched simkd params" in named  # still listed, as optional
    with pytest.raises(SystemExit, match=r"unknown method\(s\) \['student alone matched kd params'\]"):
        script_main(methods, "--plan", "--out-dir", str(kept_runs), "--methods", "student alone matched kd params")
