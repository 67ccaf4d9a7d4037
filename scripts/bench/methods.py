"""The method table (issue #13): every loss preset, the schemes and the student alone, seeds, honest intervals.

    python -m scripts.bench methods --plan             # the grid, what is done, the estimated time; trains nothing
    nice -n 10 python -m scripts.bench methods --first # the first sitting (about 2 h), writes docs/benchmarks.md
    nice -n 10 python -m scripts.bench methods         # the rest: trains only what outputs/benchmark lacks
    python -m scripts.bench methods --methods kd dkd   # chosen rows (the table shows every row already run)
    python -m scripts.bench methods --mini --out-dir /tmp/b    # 1 seed, 1 epoch of 3 batches: checks the command
    python -m scripts.bench methods --setting strong --plan    # resnet20 teachers -> resnet8 (fmnist_strong)
    python -m scripts.bench methods --setting strong --teacher-seed 1 --methods kd   # under the second teacher
    python -m scripts.bench methods --cifar100 --plan  # the CRD setting, for a GPU box with CIFAR-100
    python -m scripts.bench methods --epochs 60 --out-dir outputs/benchmark_e60 teacher_cache.augmentations=true \
        --methods "student alone" kd                   # another schedule: its table in the out-dir, not docs/
    python -m scripts.bench methods ... --results docs/results/benchmark_e60 --doc docs/benchmarks.md
                                                       # finished runs kept in the repo, the table published
    python -m scripts.bench methods ... --methods "student alone matched simkd params"
                                                       # an optional row: the student alone at SimKD's size
    python -m scripts.bench methods --setting strong --tune mlkd   # and a row at the weight chosen on validation

Each method is one Hydra multirun over the seeds in ``<out-dir>/<method>/`` with ``resume=auto``; a method
whose seed folders all hold metrics.json is not started, an unfinished run resumes from its last.ckpt.
``<out-dir>/records.json`` keeps the commit and command that trained each method, so the table says which
commit made each row. The teacher is trained (and cached) first, by ``stage=teacher`` in ``<out-dir>/teacher``.
The rows (every loss preset, the schemes) and the settings are defined in grid.py (a setting with several
teachers of one recipe has an out-dir and a section per teacher); the table is the
out-dir's section of the document (doc.py); a row whose deployed student is larger than the student alone's gets
optional rows, the student alone at its size (``matched_rows``), listed by --plan and trained only when named.
``--tune`` gives a loss row a second row at the weight of its own term that has the best validation top-1
(tuned.py: the candidates in ``<out-dir>/tune_<method>``, the choice in its choice.json).
``--results DIR`` keeps the small files of every finished run (each seed as it ends) and the teacher's weights
in DIR (to commit) and puts them back on a machine that lacks them (results.py): a grid spans machines.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from dataclasses import replace
from functools import partial
from pathlib import Path

from hydra.utils import instantiate

from distill.io import read_json, write_json
from distill.losses import build_loss_terms
from distill.teacher.logits_cache import live_teacher_reason
from distill.teacher.weights_cache import teacher_cache_key
from scripts.bench.doc import document_for, matched_name, write_doc, write_section
from scripts.bench.grid import FIRST_SITTING, ROOT, SETTINGS, Method, default_out_dir, folder_name, grid
from scripts.bench.results import restore, save_row, save_teacher, save_top
from scripts.bench.rows import collect, config_error, finished_seeds, matched_rows
from scripts.bench.table_command import table_command
from scripts.bench.teacher_seeds import restore_other_teachers, share_teacherless_rows, teacher_dirs, teacherless
from scripts.bench.teacher_seeds import section_text as teacher_section
from scripts.bench.training import composed, run_method, teacher_in_cache, teacher_seed_override, train_teacher
from scripts.bench.tuned import (
    CHOICE,
    candidate_weights,
    choices,
    method_term,
    missing_candidates,
    run_candidates,
    tune_folder,
    tuned_row,
    tuned_rows,
    write_choice,
)
from scripts.bench.tuned import section_text as tuned_section


def estimate(method: Method, args: argparse.Namespace, missing: int) -> float:
    cost = args.setting.costs
    step = (method.student_steps * cost["student_step"] + method.teacher_forwards * cost["teacher_forward"]
            + method.extra_step_seconds)
    epoch = args.batches * step + method.runs_per_seed * cost["validation"]
    return missing * (method.runs_per_seed * cost["run"] + args.epochs * epoch)


def cached_loss_rows(methods: list[Method], args: argparse.Namespace) -> tuple[set[str], int]:
    """The loss rows whose teacher logits come from the teacher-output cache in this setting, asked of the same
    rule the runs follow (distill.teacher.logits_cache), and the augmentation variants the cache holds per image."""
    cfg = composed(args)
    datamodule = instantiate(cfg.data)  # its settings only: no data is read before setup()
    cached, count = set(), 1
    for method in methods:
        if method.preset is not None:
            reason, variants = live_teacher_reason(cfg.teacher_cache, build_loss_terms(method.preset), datamodule)
            if reason is None:
                cached.add(method.name)
                count = variants.count if variants else 1
    return cached, count


def plan(methods: list[Method], args: argparse.Namespace, optional: Sequence[Method] = (),
         tuning: Sequence[Method] = ()) -> float | None:
    """Print the grid with what is done and what is left, and the estimated time of what is left; then the
    ``optional`` rows (not counted), which train only when --methods names them, and the candidates of the
    ``tuning`` rows (counted, with the row at the weight they choose)."""
    teacher_state = ("done" if (args.out_dir / "teacher" / "metrics.json").is_file() else
                     f"cached in {args.cache_dir}" if teacher_in_cache(args) else "to train")
    teacher_done = teacher_state != "to train"
    teacher = f" (teacher.train.seed={args.teacher_seed})" if teacher_seed_override(args) else ""
    print(f"setting: experiment={args.setting.experiment}, {args.epochs} student epochs of "
          f"{args.batches or 'all'} batches, {args.seeds} seeds, teacher{teacher} {args.teacher_epochs} epochs "
          f"({teacher_state}); out: {args.out_dir}")
    total, teacher_seconds, cost = None, 0.0, args.setting.costs
    if cost is not None and args.batches:
        teacher_seconds = cost["run"] + args.teacher_epochs * (args.batches * cost["teacher_step"] + cost["validation"])
        total = 0.0 if teacher_done else teacher_seconds
    cached, variants = cached_loss_rows(methods, args) if total is not None else (set(), 1)
    # One build of a teacher's cache: every variant of every training image once.
    build_seconds = (cost or {}).get("cache_batch", 0.0) * variants * (args.setting.train_images or 0) / 128
    # The benchmark teacher's cache, built by the first run that reads it (a row that builds a cache of its own
    # teachers, the ensemble's, does not read it).
    readers = [m.name for m in methods if m.name in cached and not m.row_cache_builds]
    cache_built = any(finished_seeds(args.out_dir / folder_name(name), args.seeds) for name in readers)
    if readers and not cache_built:
        assert total is not None  # readers come from cached rows, which need --batches, which sets a total
        total += build_seconds
    print(f"{'method':<38} {'done':>5} {'est. min':>8}  overrides")
    for method in methods:
        done = len(finished_seeds(args.out_dir / folder_name(method.name), args.seeds))
        if method.name in cached:
            method = replace(method, teacher_forwards=0.0, note=f"{method.note}; cached teacher outputs")
        seconds = estimate(method, args, args.seeds - done) if total is not None else None
        if reason := config_error(args.out_dir / folder_name(method.name)):
            seconds, method = 0.0, replace(method, note=f"cannot run here: {reason}")  # tried again: a few seconds
        if seconds:  # the teachers a row trains for itself (none the cache holds), and their output caches
            once = done == 0
            if once and method.row_teacher_trainings and not teacher_in_cache(args, *method.overrides):
                seconds += method.row_teacher_trainings * teacher_seconds
            if method.name in cached:
                seconds += build_seconds * ((args.seeds - done) * method.seed_cache_builds
                                            + once * method.row_cache_builds)
        if total is not None:
            assert seconds is not None  # estimated whenever there is a total
            total = total + seconds
        print(f"{method.name:<38} {done:>2}/{args.seeds:<2} {'n/a' if seconds is None else f'{seconds / 60:.1f}':>8}  "
              + " ".join(method.overrides) + (f"  ({method.note})" if method.note else ""))
    for method in optional:
        done = len(finished_seeds(args.out_dir / folder_name(method.name), args.seeds))
        print(f"{method.name:<38} {done:>2}/{args.seeds:<2} {'optional':>8}  " + " ".join(method.overrides)
              + f"  ({method.note}; trained only when --methods names it)")
    for method in tuning:
        term, reference = method_term(method)
        weights = candidate_weights(reference)
        missing = missing_candidates(args.out_dir, method)
        priced = replace(method, teacher_forwards=0.0) if method.name in cached else method
        row_left = 0 if (tune_folder(args.out_dir, method.name) / CHOICE).is_file() else args.seeds
        seconds = (estimate(priced, args, len(missing)) + estimate(priced, args, row_left)
                   if total is not None else None)
        if total is not None and seconds is not None:
            total += seconds
        print(f"{'tune ' + method.name:<38} {len(weights) - len(missing):>2}/{len(weights):<2} "
              f"{'n/a' if seconds is None else f'{seconds / 60:.1f}':>8}  {term} at {', '.join(map(str, weights))} "
              f"(seed 0), then {args.seeds} seeds at the weight of best validation top-1 (none if the reference)")
    if total is None:
        print("no time estimate: the setting has no costs for 2 CPU cores (grid.Setting.costs); it is for a GPU")
    else:
        print(f"estimated time for what is left: {total / 3600:.1f} h ({total / 60:.0f} min) on 2 CPU cores with "
              "nothing else running (± 50 %)")
    if cached:
        print(f"{len(cached)} row(s) read the teacher-output cache ({variants} variant(s) an image): "
              + ("built in an earlier sitting (a cached row has finished runs here)" if cache_built else
                 "its build is counted once, in the total"))
    return total


def section_title(args: argparse.Namespace) -> str:
    """The heading of the out-dir's section: "Fashion-MNIST, 15 epochs"; for a setting with several teachers,
    its name and which teacher: "Fashion-MNIST, strong teacher seed 1, 30 epochs"."""
    teacher = f", {args.setting.name} teacher seed {args.teacher_seed}" if teacher_seed_override(args) else ""
    return f"{args.setting.data}{teacher}, {args.epochs} epochs"


def setting_record(args: argparse.Namespace) -> dict:
    """What makes the runs of an out-dir comparable: a finished run is read back only under the same record."""
    return {"experiment": args.setting.experiment, "epochs": args.epochs, "batches": args.batches,
            "teacher_epochs": args.teacher_epochs,
            "extra": list(args.setting.extra) + teacher_seed_override(args) + list(args.extra)}


def check_setting(args: argparse.Namespace, folder: Path) -> None:
    """Refuse to mix schedules in one folder: resuming reads back every finished run it finds there."""
    path = folder / "setting.json"
    if not path.is_file():
        return
    recorded, wanted = read_json(path), setting_record(args)
    changed = {key: (recorded.get(key), value) for key, value in wanted.items() if recorded.get(key) != value}
    if changed:
        details = ", ".join(f"{key} {old!r} there, {new!r} asked" for key, (old, new) in changed.items())
        sys.exit(f"error: {folder} holds runs of another setting ({details}); give a new --out-dir "
                 "and --results (or the same options as before)")


def doc_path(args: argparse.Namespace) -> Path:
    """Where the table goes (--doc, else doc.document_for: docs/ for the default folder's grid only)."""
    if args.doc:
        return args.doc
    published = ROOT / "docs" / ("cifar100_benchmark.md" if args.setting.name == "cifar100" else "benchmarks.md")
    return document_for(args.out_dir, default_out_dir(args.setting, args.teacher_seed), args.mini, published)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plan", action="store_true", help="print the grid and the estimated time; train nothing")
    parser.add_argument("--setting", choices=sorted(SETTINGS), default="fmnist",
                        help="fmnist: the small_cnn grid; strong: resnet20 teachers -> resnet8 (fmnist_strong); "
                        "cifar100: the CRD setting (GPU)")
    parser.add_argument("--cifar100", action="store_true", help="the same as --setting cifar100")
    parser.add_argument("--teacher-seed", type=int, default=0,
                        help="which teacher of a setting with several (teacher.train.seed; its own out-dir)")
    parser.add_argument("--epochs", type=int, default=None, help="student epochs (default: the setting's)")
    parser.add_argument("--teacher-epochs", type=int, default=None)
    parser.add_argument("--batches", type=int, default=None, help="training batches per epoch (default: setting's)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--methods", nargs="*", default=None, help="train only these rows (the table shows all run)")
    parser.add_argument("--tune", nargs="*", default=[], metavar="METHOD",
                        help="also a row at the weight of best validation top-1 for these loss rows (tuned.py)")
    parser.add_argument("--first", action="store_true", help="the first sitting's rows only (FIRST_SITTING)")
    parser.add_argument("--out-dir", type=Path, default=None)
    parser.add_argument("--cache-dir", type=Path, default=Path("~/.cache/distill").expanduser())
    parser.add_argument("--doc", type=Path, default=None,
                        help="default: docs/benchmarks.md for the default --out-dir, else <out-dir>/benchmarks.md; "
                        "the out-dir's section of it is rewritten, the rest kept")
    parser.add_argument("--mini", action="store_true", help="1 seed, 1 epoch, a few batches: checks the command")
    parser.add_argument("--results", type=Path, default=None,
                        help="keep finished runs and the teacher here (to commit); restored on a new machine")
    parser.add_argument("extra", nargs="*", help="more Hydra overrides for every run")
    args = parser.parse_intermixed_args(argv)  # overrides may stand before, between and after the options
    # --methods takes every word after it, so overrides written after it land there; a method name never
    # holds "=" (a Hydra override always does), so those words go back to the overrides, in their order.
    for name in ("methods", "tune"):
        if getattr(args, name):
            args.extra += [word for word in getattr(args, name) if "=" in word]
            setattr(args, name, [word for word in getattr(args, name) if "=" not in word])
    args.setting = SETTINGS["cifar100" if args.cifar100 else args.setting]
    if not 0 <= args.teacher_seed < args.setting.teacher_seeds:
        parser.error(f"--teacher-seed {args.teacher_seed}: the {args.setting.name} setting has "
                     f"{args.setting.teacher_seeds} teacher(s), seeds 0 to {args.setting.teacher_seeds - 1}")
    args.epochs = args.epochs or args.setting.epochs
    args.teacher_epochs = args.teacher_epochs or args.setting.teacher_epochs
    args.batches = args.batches or args.setting.batches
    args.out_dir = args.out_dir or default_out_dir(args.setting, args.teacher_seed)
    if args.mini:
        args.seeds, args.epochs, args.teacher_epochs, args.batches = 1, 1, 1, 3
        # Evaluation batches of 128, not the data's 1,024: the 2 val and 2 test batches of each run (student and
        # live teacher) were most of a miniature run's time.
        args.extra += ["trainer.limit_val_batches=2", "trainer.limit_test_batches=2", "data.eval_batch_size=128",
                       "report.enabled=false"]
    return args


def keeper(args: argparse.Namespace, name: str) -> Callable[[], object] | None:
    """What keeps row ``name``'s ended seeds in the results folder (None without --results): called while the
    row trains and when it ends, so a crash or a sitting's end loses no seed that had finished."""
    return partial(save_row, args.out_dir, args.results, folder_name(name)) if args.results else None


def write_teacher_gains(doc: Path, methods: list[Method], teachers: dict[int, Path],
                        args: argparse.Namespace) -> None:
    """The section of each row's gain under each teacher of the setting (teacher_seeds.py), from the runs of
    every teacher's out-dir that exists, with the rows chosen on validation in each (not only in this one)."""
    rows_by_teacher, top1 = {}, {}
    names = {method.name for method in methods}
    for seed, folder in teachers.items():
        if folder.is_dir():
            tuned_there = [row for row in tuned_rows(methods, folder) if row.name not in names]
            rows_by_teacher[seed] = collect([*methods, *tuned_there], folder)
            metrics = folder / "teacher" / "metrics.json"
            accuracy = (read_json(metrics).get("teacher") or {}).get("test_acc_top1") if metrics.is_file() else None
            top1[seed] = None if accuracy is None else 100 * accuracy
    title = f"{args.setting.data}, {args.setting.name} teachers, {args.epochs} epochs"
    write_section(doc, f"{args.out_dir.parent.name}/teachers", teacher_section(rows_by_teacher, top1, title),
                  args.setting.data)


def tuning_methods(methods: list[Method], args: argparse.Namespace) -> list[Method]:
    """The loss rows --tune names, refused before anything trains if one is not a loss row of the setting; with
    --methods, their reference rows are chosen too (the reference weight is a candidate)."""
    by_name = {method.name: method for method in methods}
    tuning = []
    for name in args.tune:
        if name not in by_name:
            sys.exit(f"error: --tune {name!r} is not a row of the {args.setting.name} setting; choose from: "
                     + ", ".join(m.name for m in methods if m.preset and m.name in m.preset))
        try:
            method_term(by_name[name])
        except ValueError as error:
            sys.exit(f"error: --tune: {error}")
        tuning.append(by_name[name])
    if args.methods is not None:
        args.methods = [*args.methods, *(m.name for m in tuning if m.name not in args.methods)]
    return tuning


def main() -> None:
    args = parse_args()
    doc = doc_path(args)
    methods = grid(args.setting, args.epochs)
    if args.first:
        args.methods = [*(args.methods or []), *FIRST_SITTING]
    teacher_key = teacher_cache_key(composed(args)) if args.results else None  # asked of the cache with --results
    if teacher_key is not None:  # before anything reads the out-dir: a new machine gets the kept runs and teacher back
        check_setting(args, args.results)
        restore(args.results, args.out_dir, args.cache_dir, teacher_key)
        restore_other_teachers(args.results, args.out_dir, args.cache_dir, args.setting.teacher_seeds,
                               args.teacher_seed)
    check_setting(args, args.out_dir)
    tuning = tuning_methods(methods, args)
    methods += tuned_rows(methods, args.out_dir)  # chosen in an earlier call: rows like the others
    optional = matched_rows(collect(methods, args.out_dir))  # from the finished runs: what size to match
    unknown = sorted(set(args.methods or []) - {m.name for m in [*methods, *optional]})
    if unknown:
        sys.exit(f"error: unknown method(s) {unknown}; choose from: {', '.join(m.name for m in methods)}"
                 + (f"; optional: {', '.join(m.name for m in optional)}" if optional else "")
                 + f" ('{matched_name('<row>', 'params')}' and '... macs', or '... size' where one width matches "
                   "both, exist once the row has finished runs whose deployed student is larger than the student "
                   "alone's)")
    chosen = [m for m in methods if args.methods is None or m.name in args.methods]
    chosen += [m for m in optional if m.name in (args.methods or [])]
    teachers = teacher_dirs(args.out_dir, args.setting.teacher_seeds)
    if args.teacher_seed > 0 and teachers:  # the rows without a teacher are the first teacher's runs
        named = [m.name for m in chosen if teacherless(m.overrides) and args.methods is not None]
        if named:
            sys.exit(f"error: {named} train the student without a teacher: their runs are shared by every teacher; "
                     "train them with --teacher-seed 0")
        chosen = [m for m in chosen if not teacherless(m.overrides)]
        print(f"rows without a teacher, shared from {teachers[0]}: "
              + ", ".join(m.name for m in methods if teacherless(m.overrides)))
    if args.plan:
        plan(chosen, args, [m for m in optional if m not in chosen], tuning)
        return
    args.out_dir.mkdir(parents=True, exist_ok=True)
    write_json(args.out_dir / "setting.json", setting_record(args))
    teacher = train_teacher(args)
    if teacher is None:
        sys.exit(f"error: the teacher failed; see {args.out_dir / 'teacher.log'}")
    if teacher_key is not None:
        if teacher.get("teacher", {}).get("cache_key"):  # a teacher trained here (not a weights file)
            save_teacher(args.cache_dir, teacher_key, args.results)
        save_top(args.out_dir, args.results)
    trained = 0
    for method in tuning:  # the reference row, the candidates, the choice; then its row trains with the others
        trained += run_method(method, args, keeper(args, method.name))
        run_candidates(method, args)
        if args.results:
            for folder in (folder_name(method.name), tune_folder(args.out_dir, method.name).name):
                save_row(args.out_dir, args.results, folder)
        try:
            choice = write_choice(args.out_dir, method)
        except ValueError as error:
            sys.exit(f"error: {error} (logs in {args.out_dir})")
        row = tuned_row(method, choice)
        print(f"{method.name}: {choice['term']} {choice['chosen']} chosen on validation", flush=True)
        if row is not None and row.name not in {m.name for m in methods}:
            methods.append(row)
            chosen.append(row)
    for method in chosen:
        trained += run_method(method, args, keeper(args, method.name))
    print(f"trained: {trained} method(s); {len(chosen) - trained} read back from {args.out_dir}", flush=True)
    if args.teacher_seed > 0 and teachers:
        share_teacherless_rows(methods, args.out_dir, teachers[0], args.seeds)
    rows = collect(methods, args.out_dir)
    optional = matched_rows(rows)  # again: a row trained now may be the larger one
    rows += collect(optional, args.out_dir)  # optional rows trained now or earlier are rows of the table
    if args.results:  # rows of earlier calls too (chosen or not), and the candidates of every tuned row
        folders = [folder_name(method.name) for method in [*methods, *optional]]
        folders += [tune.name for tune in (tune_folder(args.out_dir, m.name) for m in methods) if tune.is_dir()]
        for folder in folders:
            save_row(args.out_dir, args.results, folder)
    optional_names = [m.name for m in optional]
    tuned_choices = choices(methods, args.out_dir)
    command = table_command(sys.argv[1:], [m.name for m in grid(args.setting, args.epochs)],
                            [r.method for r in rows], [r.method for r in rows if r.method in optional_names],
                            [c["method"] for c in tuned_choices])
    write_doc(doc, rows, teacher, args.out_dir, command=command,
              setting={"data": args.setting.data, "experiment": args.setting.experiment, "epochs": args.epochs,
                       "title": section_title(args),
                       "seeds": args.seeds, "teacher_epochs": args.teacher_epochs,
                       "published": dict(args.setting.published), "extra": setting_record(args)["extra"],
                       "tuned_lines": tuned_section(tuned_choices), "optional": optional_names})
    if teachers:
        write_teacher_gains(doc, methods, teachers, args)
    print(f"wrote {doc}")
    failed = [r.method for r in rows if r.failed]
    cannot_run = {r.method for r in rows if r.not_applicable}
    if cannot_run & {m.name for m in chosen}:
        print(f"cannot run on this setting (config errors, in {doc}): {sorted(cannot_run)}")
    missing = [m.name for m in chosen if m.name not in cannot_run
               and len(finished_seeds(args.out_dir / folder_name(m.name), args.seeds)) < args.seeds]
    if missing:
        sys.exit(f"unfinished methods: {missing} (logs in {args.out_dir}; run the same command again to resume)"
                 + (f"; with failures: {failed}" if failed else ""))


if __name__ == "__main__":
    main()
