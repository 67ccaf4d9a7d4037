"""A setting with several teachers of one recipe (the strong setting: ``teacher.train.seed`` 0 and 1): each
teacher has its own out-dir and table, the rows without a teacher are shared between them, and one more section
gives each row's gain under each teacher and over the teachers together.

A distilled student's result depends on its teacher's seed as well as its own (one pair, the same code: two
teachers of 93.51 and 93.55 % test top-1 moved KD's student by about 0.6 points), so a gain measured under one
teacher is that teacher's. Pooling a row's runs over the teachers puts the teachers' spread into the row's
standard deviation, so the pooled interval covers it.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from distill.io import read_json, write_json
from scripts.bench.doc import BASELINE, MethodRuns, interval_text, plus_minus
from scripts.bench.grid import TEACHER_FOLDER, Method, folder_name
from scripts.bench.results import restore_runs, restore_teachers
from scripts.bench.rows import finished_seeds
from scripts.bench.stats import welch_interval


def teacherless(overrides: Iterable[str]) -> bool:
    """A row's overrides that train the student without a teacher (the student alone, on any schedule, at any
    size)."""
    return "stage=student" in overrides


def teacher_dirs(out_dir: Path, teachers: int) -> dict[int, Path]:
    """The out-dirs of every teacher of the setting, beside ``out_dir`` (one of them); {} when ``out_dir`` is
    not a teacher's folder (a miniature, another --out-dir)."""
    if not out_dir.name.startswith(TEACHER_FOLDER):
        return {}
    return {seed: out_dir.parent / f"{TEACHER_FOLDER}{seed}" for seed in range(teachers)}


def restore_other_teachers(results: Path, out_dir: Path, cache_root: Path, teachers: int,
                           own_seed: int) -> list[Path]:
    """On a new machine, what the setting's other teachers kept, from the results folders beside ``results``:
    their runs into the out-dirs beside ``out_dir`` (a later teacher shares the first teacher's student alone,
    and the gains section reads every teacher's rows; without them, both would be written from this teacher's
    runs alone), and their weights into the cache (the ensemble row distils from every teacher, which would
    otherwise be trained again: a different teacher from the one the other teacher's rows had)."""
    kept, out = teacher_dirs(results, teachers), teacher_dirs(out_dir, teachers)
    copied = []
    for seed, folder in kept.items():
        if seed != own_seed and seed in out and folder.is_dir():
            copied += restore_runs(folder, out[seed]) + restore_teachers(folder, cache_root)
    return copied


def share_teacherless_rows(methods: list[Method], out_dir: Path, first: Path, seeds: int) -> list[str]:
    """Link each teacherless row of ``out_dir`` to its finished runs in the first teacher's out-dir ``first``
    (they have no teacher, so they are the same runs under every teacher), with its line of records.json; a row
    not finished there is left alone. Returns the rows linked now."""
    linked = []
    records_path, first_records_path = out_dir / "records.json", first / "records.json"
    records = read_json(records_path) if records_path.is_file() else {}
    first_records = read_json(first_records_path) if first_records_path.is_file() else {}
    for method in (m for m in methods if teacherless(m.overrides)):
        source, target = first / folder_name(method.name), out_dir / folder_name(method.name)
        if target.exists() or target.is_symlink() or len(finished_seeds(source, seeds)) < seeds:
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(os.path.relpath(source, target.parent), target_is_directory=True)
        if method.name in first_records:
            records[method.name] = {**first_records[method.name], "shared_from": first.name}
        linked.append(method.name)
    if linked:
        write_json(records_path, records)
    return linked


def gains_text(rows_by_teacher: dict[int, list[MethodRuns]], teacher_top1: dict[int, float | None]) -> str:
    """A table of each distilled row's gain over the student alone (test top-1 at the best validation epoch,
    95 % Welch interval) under each teacher, and with the row's runs of every teacher pooled."""
    seeds = sorted(rows_by_teacher)
    baselines = {seed: next((r for r in rows if r.method == BASELINE and r.best), None)
                 for seed, rows in rows_by_teacher.items()}
    names = [r.method for seed in seeds for r in rows_by_teacher[seed]  # the rows with a teacher
             if r.best and r.method != BASELINE and not teacherless(r.overrides.split())]
    header = ["row", *(f"teacher {seed} ({'n/a' if teacher_top1.get(seed) is None else f'{teacher_top1[seed]:.2f}'} %)"
                       for seed in seeds), "every teacher, pooled"]
    lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
    for name in dict.fromkeys(names):  # each row once, in the order the tables have them
        cells, pooled, teachers_with_runs = [], [], 0
        for seed in seeds:
            row = next((r for r in rows_by_teacher[seed] if r.method == name and r.best), None)
            baseline = baselines[seed]
            interval = welch_interval(row.best, baseline.best) if row and baseline else None
            cells.append("—" if row is None else f"{plus_minus(row.best)}; "
                         + (interval_text(interval) if interval else "n/a"))
            if row is not None:
                pooled += row.best
                teachers_with_runs += 1
        baseline = baselines[seeds[0]]
        interval = welch_interval(pooled, baseline.best) if teachers_with_runs > 1 and baseline else None
        cells.append(f"{plus_minus(pooled)}; {interval_text(interval)}" if interval else "—")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def section_text(rows_by_teacher: dict[int, list[MethodRuns]], teacher_top1: dict[int, float | None],
                 title: str) -> str:
    return "\n".join([
        f"### {title}: the gains under each teacher",
        "",
        "Each cell: the row's test top-1 (mean ± std over its seeds) and its gain over the student alone with "
        "the 95 % Welch interval (`*` where it excludes 0). The student alone has no teacher, so its runs are "
        "the same under every teacher. *Every teacher, pooled* takes the row's runs under all teachers as one "
        "sample, so the spread between teachers is in its interval; it is shown only for a row run under more "
        "than one teacher.",
        "",
        gains_text(rows_by_teacher, teacher_top1),
    ])
