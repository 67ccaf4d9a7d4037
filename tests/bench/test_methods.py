"""The methods command (python -m scripts.bench methods): a resumable miniature that also tunes, --plan's prices,
its refusals, and the deployed sizes of its rows with their matched-size rows."""

import json
import shutil
from pathlib import Path

import pytest

from distill.teacher.weights_cache import TeacherCache, teacher_cache_key
from scripts.bench import (
    methods,  # the command's own functions, tested without a subprocess
    training,
)
from scripts.bench import rows as bench_rows
from scripts.bench.doc import (
    MethodRuns,
    larger_text,
    method_table,
    section_text,
)
from scripts.bench.grid import FMNIST_COST, STRONG_COST
from scripts.bench.results import size_of, width_form
from tests.bench.conftest import kept_seed, run_config

ROOT = Path(__file__).resolve().parents[2]
FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


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
    stdout = script_main(methods, "--plan", "--out-dir", str(tmp_path / "bench"),
                         "--cache-dir", str(tmp_path / "cache"))
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
                         "--out-dir", str(tmp_path / "bench"), "--cache-dir", str(tmp_path / "cache"))
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
        args = methods.parse_args([*overrides, "--epochs", "60", "--out-dir", str(tmp_path), "--plan",
                                    "--cache-dir", str(tmp_path / "cache")])
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
                                 "--plan", "--cache-dir", str(tmp_path / "cache")])
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


def test_an_ensemble_of_cached_teachers_is_priced_without_training_them(tmp_path, capsys):
    """The strong setting's ensemble distils from the setting's own two teachers (their keys, not look-alikes):
    each one the cache holds is neither the benchmark's teacher to train nor the row's."""
    def plan() -> float:
        args = methods.parse_args(["--setting", "strong", "--out-dir", str(tmp_path / "teacher_seed0"), "--plan",
                                   "--cache-dir", str(tmp_path / "cache")])
        ensemble = next(m for m in methods.grid(args.setting, 30) if m.name.startswith("ensemble"))
        return methods.plan([ensemble], args)

    def cache_teacher(seed: int) -> None:
        args = methods.parse_args(["--setting", "strong", "--teacher-seed", str(seed)])
        entry = TeacherCache(tmp_path / "cache").entry(teacher_cache_key(training.composed(args)))
        entry.mkdir(parents=True)
        (entry / "teacher.json").write_text("{}")

    cost = STRONG_COST
    teacher = cost["run"] + 150 * (100 * cost["teacher_step"] + cost["validation"])
    nothing_cached = plan()
    cache_teacher(0)
    assert nothing_cached - plan() == pytest.approx(teacher)  # the benchmark's teacher; the row's second is left
    first_cached = plan()
    cache_teacher(1)
    assert first_cached - plan() == pytest.approx(teacher)  # the row's second teacher: nothing left to train
    capsys.readouterr()


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
    assert lines["dist"].startswith("| dist | 0 | — | — | no kept runs (below) | — | — | — | — | — | `abc1234` |")
    assert list(lines) == ["simkd", "kd", "student alone", "dist"]

    # The optional rows: the student alone at the width closest to SimKD's student in parameters, and in MACs.
    optional = bench_rows.matched_rows(rows)
    names = [m.name for m in optional]
    teacher = {"teacher": {"architecture": "small_cnn", "params": 94186, "test_acc_top1": 0.9}}
    setting = {"data": "Fashion-MNIST", "experiment": "fmnist_benchmark", "epochs": 60, "teacher_epochs": 60,
               "optional": names}
    text = section_text(rows, teacher, "python -m scripts.bench methods", setting)
    assert ("† The deployed student (what the run exports and measures) is larger than the student alone's (6,274 "
            "parameters, 0.51 M MACs): the row's gain over the student alone is not a gain at equal size.") in text
    assert ('- **simkd** (8.7x the parameters, 5.5x the MACs): the student alone at matched size is not trained: add '
            '`--methods "student alone matched simkd params" "student alone matched simkd macs"`') in text
    assert "- **kd**" not in text
    assert "### Rows with no kept runs" in text
    assert ("- **dist**: records.json has its training (commit `abc1234`, exit 0, finished 2026-11-29 13:30:02), "
            "but no seed of it finished here: dist/ holds no metrics.json") in text

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
    assert larger_text(rows, names)[2].startswith(
        "- **simkd** (8.7x the parameters, 5.5x the MACs): +1.10 [") and larger_text(rows, names)[2].endswith(
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


def test_one_row_matches_both_measures_where_one_width_is_the_closest_in_both(tmp_path):
    """The strong pair's SimKD (the resnet8 trunk, a projector and the teacher's classifier: 91,322 parameters and
    10.0 M MACs, 1.17x and 1.07x the student alone's) is closest in both to cifar_resnet8 at width 17: one optional
    row, not two rows that would train the same network; once it has runs, one line gives the gain over it."""
    config = {"student": {"name": "cifar_resnet8", "kwargs": {}}, **STRONG_RUN}
    (tmp_path / "alone").mkdir()
    (tmp_path / "alone" / "run_config.json").write_text(json.dumps(config))
    baseline = MethodRuns("student alone", "", best=[90.5, 90.7], run_dirs=[tmp_path / "alone"], params=[77_754],
                          macs=[size_of(config).macs])
    simkd = MethodRuns("simkd", "", best=[91.0, 91.2], params=[91_322], macs=[9_998_208])
    optional = bench_rows.matched_rows([baseline, simkd])
    assert [m.name for m in optional] == ["student alone matched simkd size"]
    assert optional[0].overrides[-1] == "++student.kwargs.width=17"
    assert optional[0].note.endswith("the width closest to simkd's deployed student in parameters (91,322) and in "
                                     "MACs (9,998,208)")
    # A student without a width has no matched rows (rows.matched_rows finds none): the line says so.
    assert larger_text([baseline, simkd], [])[2].endswith(
        "no row of the student alone at matched size (its network has no width to change).")
    lines = larger_text([baseline, simkd], ["student alone matched simkd size"])
    assert lines[2].endswith('add `--methods "student alone matched simkd size"` to the command under *How this '
                             "table was made* (optional rows of `--plan`).")
    matched = MethodRuns("student alone matched simkd size", "", best=[91.4, 91.6], params=[87_679],
                         macs=[10_543_128])
    lines = larger_text([baseline, simkd, matched], ["student alone matched simkd size"])
    assert lines[2] == ("- **simkd** (1.2x the parameters, 1.1x the MACs): -0.40 [-1.01, +0.21] over the student "
                        "alone of matched parameters and MACs (87,679 parameters, 10.54 M MACs).")


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


def test_plan_of_the_cifar100_setting_reads_no_data(tmp_path, script_main):
    """--plan prices the GPU setting without its data: nothing may download CIFAR-100 (or fail for want of it)."""
    stdout = script_main(methods, "--cifar100", "--plan", "--out-dir", str(tmp_path / "bench"),
                         "--cache-dir", str(tmp_path / "cache"))
    assert "no time estimate" in stdout and "dml x2" in stdout
    assert not (tmp_path / "bench").exists() and not (tmp_path / "cache").exists()


def test_plan_counts_no_teacher_training_for_a_teacher_the_cache_holds(tmp_path, capsys):
    """A new out-dir whose teacher recipe another out-dir trained (the strong pair at 60 epochs, teacher 0 of the
    30-epoch grid): the runs read the cached teacher, so --plan neither prices nor announces its training."""
    def plan(cache: Path) -> tuple[float, str]:
        args = methods.parse_args(["--epochs", "60", "--out-dir", str(tmp_path / "e60"), "--plan",
                                   "--cache-dir", str(cache)])
        total = methods.plan([m for m in methods.grid(args.setting, 60) if m.name == "kd"], args)
        return total, capsys.readouterr().out

    empty_total, empty_out = plan(tmp_path / "empty")
    args = methods.parse_args(["--epochs", "60", "--out-dir", str(tmp_path / "e60")])
    entry = TeacherCache(tmp_path / "cache").entry(teacher_cache_key(training.composed(args)))
    entry.mkdir(parents=True)
    (entry / "teacher.json").write_text("{}")
    cached_total, cached_out = plan(tmp_path / "cache")
    assert "epochs (to train)" in empty_out
    assert f"epochs (cached in {tmp_path / 'cache'})" in cached_out
    cost = FMNIST_COST
    teacher = cost["run"] + args.teacher_epochs * (100 * cost["teacher_step"] + cost["validation"])
    assert empty_total - cached_total == pytest.approx(teacher)
