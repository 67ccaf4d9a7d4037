"""A benchmark's finished runs kept in the repository, so a grid outlives the machine that trains it.

A benchmark's out-dir (outputs/, not committed) holds checkpoints and logs, and the teacher lives in the
teacher cache (~/.cache/distill): both are gone on a new machine, and a teacher trained again there need not
be the same teacher (the 60-epoch grid's, same config and seed: 88.47 % test top-1, 88.33 % on the next
machine). So the small files the table is made of (each seed's metrics.json, run_config.json,
csv/metrics.csv, a linked scheme's per-link files, error.json of a row that cannot run, records.json,
setting.json) and the teacher's cache entry (its safetensors weights, 0.4 MB here) are copied into a results
folder that is committed (``--results``); a fresh checkout copies them back before anything trains, so only
the missing runs train, against the very teacher the finished rows had.

A kept run also says how large its deployed student is (``deployed_size``): the parameters its metrics.json
measured, and the MACs of the network rebuilt from its run_config.json (the run's report.json, which measured
them, is not kept: it is mostly timings of the machine that ran it).
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch import nn

from distill.config import to_dict
from distill.io import read_json, write_json
from distill.losses import build_loss_terms
from distill.measure import count_flops, parameter_count
from distill.models import create_model
from distill.plan import wrap_student
from distill.teacher.ensemble import build_teachers
from distill.teacher.weights_cache import TeacherCache

# Relative to a row's folder (``*`` a seed, then a linked scheme's links); globs, so every seed is found.
RUN_FILES = ("*/metrics.json", "*/run_config.json", "*/error.json", "*/csv/metrics.csv",
             "*/links/*/metrics.json", "*/links/*/run_config.json", "*/links/*/csv/metrics.csv")
TOP_FILES = ("setting.json", "records.json", "teacher/metrics.json", "teacher/run_config.json",
             "teacher/csv/metrics.csv", "tune_*/choice.json")  # the weights chosen on validation (tuned.py)
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
    """Keep the ended seeds of one row (its folder in the out-dir), and the records that name its commit. A row
    linked from another out-dir (a later teacher's student alone: teacher_seeds.py) is kept by that one's results,
    not a second time here."""
    if (out_dir / folder).is_symlink():
        return save_top(out_dir, results)
    copied, patterns = [], tuple(pattern.removeprefix("*/") for pattern in RUN_FILES)
    for seed in sorted(p for p in (out_dir / folder).glob("*") if p.is_dir() and ended(p)):
        copied += copy_missing(seed, results / folder / seed.name, patterns)
    return copied + save_top(out_dir, results)


def merge_records(newer: Path, older: Path, into: Path) -> bool:
    """Write the records of both records.json files into ``into`` (a row named in both: ``newer``'s). The results
    folder may hold rows of another machine's sittings that this out-dir never trained, and the out-dir rows
    that the results folder has not kept yet: neither may lose the commit and command of the other's rows."""
    records = {**(read_json(older) if older.is_file() else {}), **(read_json(newer) if newer.is_file() else {})}
    if not records or (into.is_file() and read_json(into) == records):
        return False
    write_json(into, records)
    return True


def save_top(out_dir: Path, results: Path) -> list[Path]:
    """setting.json, the teacher's run, and records.json (merged: it grows with every row)."""
    copied = copy_missing(out_dir, results, tuple(p for p in TOP_FILES if p != "records.json"))
    if merge_records(out_dir / "records.json", results / "records.json", results / "records.json"):
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
    return restore_runs(results, out_dir) + restore_teachers(results, cache_root)


def restore_teachers(results: Path, cache_root: Path) -> list[Path]:
    """Every teacher kept in ``results`` put into the cache where its key is missing (a run that asks for that
    key gets the very teacher the kept rows had: the strong setting's ensemble row distils from both teachers)."""
    cache = TeacherCache(cache_root)
    return [cache.entry(entry.name) for entry in sorted((results / TEACHER_ENTRY).glob("*"))
            if entry.is_dir() and cache.adopt(entry.name, entry)]


def restore_runs(results: Path, out_dir: Path) -> list[Path]:
    """The kept runs and records of ``results`` copied into ``out_dir`` where missing (the teacher stays out)."""
    copied = copy_missing(results, out_dir, (*TOP_FILES, *(f"*/{pattern}" for pattern in RUN_FILES)))
    if merge_records(out_dir / "records.json", results / "records.json", out_dir / "records.json"):
        copied.append(out_dir / "records.json")
    return copied


@dataclass(frozen=True)
class Size:
    """A network's parameters and MACs (one image's forward pass, as the run's efficiency report counts them)."""

    params: int
    macs: int


def deployed_model(run_config: dict[str, Any]) -> tuple[nn.Module, tuple[int, ...]]:
    """The network a run exports, rebuilt with random weights from its run_config.json, and its input shape: the
    student, or the larger one a loss term builds around it (SimKD: a projector and the teacher's classifier).

    Only architectures are read: the data module is made from its settings (no image is read before setup), the
    teacher without its weights (SimKD needs its classifier's shape, not its values).
    """
    cfg = OmegaConf.create(run_config)
    datamodule = instantiate(cfg.data)
    student = create_model(cfg.student.name, datamodule.num_classes, datamodule.in_chans, cfg.student.get("kwargs"),
                           role="student")
    if cfg.stage == "distill":
        cfg.teacher.weights, cfg.teacher.pretrained = None, False
        teacher = build_teachers(cfg, datamodule.num_classes, datamodule.in_chans, datamodule.input_shape)
        student, _ = wrap_student(cfg, build_loss_terms(to_dict(cfg.loss)), student, teacher, datamodule)
    return student, tuple(datamodule.input_shape)


def size_of(run_config: dict[str, Any]) -> Size:
    model, input_shape = deployed_model(run_config)
    return Size(parameter_count(model), count_flops(model, input_shape)["macs"])


def deployed_size(seed: Path) -> tuple[int | None, int | None]:
    """One seed's deployed student: (parameters, MACs), each None where its files cannot say.

    The parameters are the run's own count (metrics.json: the exported network, a scheme's last link or first
    peer). The MACs are counted on the network rebuilt from run_config.json, and only when the rebuilt network
    has the run's parameter count: otherwise the code that builds it has changed since, and it is another network.
    """
    metrics = read_json(seed / "metrics.json")
    params = (metrics.get("student") or {}).get("params")
    if params is None or not (seed / "run_config.json").is_file():
        return params, None
    rebuilt = size_of(read_json(seed / "run_config.json"))
    return params, rebuilt.macs if rebuilt.params == params else None


def width_form(student: dict[str, Any]) -> dict[str, Any] | None:
    """The student's config as a model with an integer ``width`` keyword, so that it can be sized: itself when it
    has one, ``cifar_resnet<depth>`` as ``cifar_resnet`` with that depth and width 16 (the same network); None
    for a model that has no width to change."""
    kwargs = student.get("kwargs") or {}
    if isinstance(kwargs.get("width"), int):
        return student
    if match := re.fullmatch(r"cifar_resnet(\d+)", student.get("name", "")):
        return {**student, "name": "cifar_resnet", "kwargs": {**kwargs, "depth": int(match[1]), "width": 16}}
    return None


def closest_width(run_config: dict[str, Any], measure: str, target: int, limit: int = 4096) -> tuple[int, Size]:
    """The ``student.kwargs.width`` at which ``run_config``'s deployed network is closest to ``target`` in
    ``measure`` ("params" or "macs"), the smaller width on a tie; both grow with the width."""
    def sized(width: int) -> Size:
        student = run_config["student"]
        return size_of({**run_config, "student": {**student, "kwargs": {**student.get("kwargs", {}), "width": width}}})

    below: tuple[int, Size] | None = None
    for width in range(1, limit + 1):
        size = sized(width)
        value = getattr(size, measure)
        if value >= target:
            if below is not None and target - getattr(below[1], measure) <= value - target:
                return below
            return width, size
        below = (width, size)
    raise ValueError(f"no width up to {limit} gives {run_config['student']['name']} {target:,} {measure}")
