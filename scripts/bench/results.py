"""A benchmark's finished runs kept in the repository, so a grid outlives the machine that trains it.

A benchmark's out-dir (outputs/, not committed) holds checkpoints and logs, and the teacher lives in the
teacher cache (~/.cache/distill): both are gone on a new machine, and a teacher trained again there need not
be the same teacher (the 60-epoch grid's, same config and seed: 88.47 % test top-1, 88.33 % on the next
machine). So the small files the table is made of (each seed's metrics.json, run_config.json,
csv/metrics.csv, a linked scheme's per-link files, error.json of a row that cannot run, records.json,
setting.json) and the teacher's cache entry (its safetensors weights, 0.4 MB here) are copied into a results
folder that is committed (``--results``); a fresh checkout copies them back before anything trains, so only
the missing runs train, against the very teacher the finished rows had.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from distill.teacher.weights_cache import TeacherCache

# Relative to a row's folder (``*`` a seed, then a linked scheme's links); globs, so every seed is found.
RUN_FILES = ("*/metrics.json", "*/run_config.json", "*/error.json", "*/csv/metrics.csv",
             "*/links/*/metrics.json", "*/links/*/run_config.json", "*/links/*/csv/metrics.csv")
TOP_FILES = ("setting.json", "records.json", "teacher/metrics.json", "teacher/run_config.json",
             "teacher/csv/metrics.csv")
TEACHER_ENTRY = "teacher/cache"  # <results>/teacher/cache/<key>/: the teacher cache entry, as the cache holds it


def copy_missing(source: Path, target: Path, patterns: tuple[str, ...]) -> list[Path]:
    """Copy the files of ``source`` that match ``patterns`` and are not in ``target``; never overwrite (a file
    already there is the newer one: a run that resumed, records.json after another row)."""
    copied = []
    for pattern in patterns:
        for path in sorted(source.glob(pattern)):
            destination = target / path.relative_to(source)
            if path.is_file() and not destination.exists():
                destination.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, destination)
                copied.append(destination)
    return copied


def ended(seed: Path) -> bool:
    """A seed that finished (metrics.json) or stopped on a configuration error (error.json). A seed still
    training has a growing csv: kept now, it would never be replaced, and would come back half-written."""
    return (seed / "metrics.json").is_file() or (seed / "error.json").is_file()


def save_row(out_dir: Path, results: Path, folder: str) -> list[Path]:
    """Keep the ended seeds of one row (its folder in the out-dir), and the records that name its commit."""
    copied, patterns = [], tuple(pattern.removeprefix("*/") for pattern in RUN_FILES)
    for seed in sorted(p for p in (out_dir / folder).glob("*") if p.is_dir() and ended(p)):
        copied += copy_missing(seed, results / folder / seed.name, patterns)
    return copied + save_top(out_dir, results)


def save_top(out_dir: Path, results: Path) -> list[Path]:
    """setting.json, the teacher's run, and records.json (rewritten: it grows with every row)."""
    copied = copy_missing(out_dir, results, tuple(p for p in TOP_FILES if p != "records.json"))
    if (out_dir / "records.json").is_file():
        results.mkdir(parents=True, exist_ok=True)
        shutil.copy2(out_dir / "records.json", results / "records.json")
        copied.append(results / "records.json")
    return copied


def save_teacher(cache_root: Path, teacher_key: str, results: Path) -> Path:
    """The teacher's cache entry (weights, description, summary) under its key."""
    cache_entry = TeacherCache(cache_root).entry(teacher_key)
    target = results / TEACHER_ENTRY / teacher_key
    if not target.exists():
        if not cache_entry.is_dir():  # before any row trains: rows kept without their teacher cannot resume
            raise SystemExit(f"error: the teacher's cache entry {cache_entry} is gone (a cleared cache?), so "
                             f"{results} cannot keep the teacher its rows are distilled from; give a new --out-dir "
                             "and --results to train the teacher again")
        shutil.copytree(cache_entry, target)
    return target


def restore(results: Path, out_dir: Path, cache_root: Path, teacher_key: str) -> list[Path]:
    """Put the kept files back into ``out_dir`` and the kept teacher into the cache, before anything trains.

    ``teacher_key`` is the key the runs will ask the cache for (from the config): if the kept teacher has
    another, the runs would train a different teacher and mix it into the table, so this stops first.
    """
    if not results.is_dir():
        return []
    kept = sorted(p.name for p in (results / TEACHER_ENTRY).glob("*") if p.is_dir())
    if kept and teacher_key not in kept:
        raise SystemExit(
            f"error: {results} keeps runs distilled from teacher {kept[0]}, but this config's teacher key is "
            f"{teacher_key}: the teacher's recipe (teacher.*, data, trainer settings) differs from the one those "
            "rows were trained with; give the same options as before, or a new --results and --out-dir")
    copied = copy_missing(results, out_dir, (*TOP_FILES, *(f"*/{pattern}" for pattern in RUN_FILES)))
    entry, cache = results / TEACHER_ENTRY / teacher_key, TeacherCache(cache_root)
    if entry.is_dir() and cache.adopt(teacher_key, entry):
        copied.append(cache.entry(teacher_key))
    return copied
