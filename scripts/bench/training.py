"""How the benchmark trains a row: one distill-train multirun over the seeds in the row's folder (resumable), the
teacher first, and records.json, which names the commit and command that trained each row (methods.py,
tuned.py)."""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf

from distill.config import fit_config
from distill.config.schemes import teacher_members
from distill.data.identity import data_identity
from distill.errors import DatasetNotFoundError
from distill.io import read_json, write_json
from distill.teacher.weights_cache import TeacherCache, teacher_cache_key
from scripts.bench.grid import ROOT, Method, folder_name
from scripts.bench.rows import finished_seeds

# What a run executes or reads: an uncommitted change here marks the row "+dirty" (a change to docs or to
# another script, made while a long grid runs, does not change what the grid trains).
RUN_PATHS = ("distill", "conf", "students", "teachers", "scripts/bench/methods.py", "scripts/bench/training.py",
             "scripts/bench/grid.py", "scripts/bench/rows.py", "scripts/bench/tuned.py", "pyproject.toml")


def commit() -> str:
    result = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", *RUN_PATHS], cwd=ROOT,
                           capture_output=True, text=True).stdout.strip()
    return (result.stdout.strip() or "unknown") + ("+dirty" if dirty else "")


def common_overrides(args: argparse.Namespace) -> list[str]:
    batches = [f"trainer.limit_train_batches={args.batches}"] if args.batches else []
    return [f"experiment={args.setting.experiment}", f"trainer.max_epochs={args.epochs}", *batches,
            f"teacher.train.max_epochs={args.teacher_epochs}", *teacher_seed_override(args),
            f"paths.cache_dir={args.cache_dir}", "resume=auto", *args.setting.extra, *args.extra]


def teacher_seed_override(args: argparse.Namespace) -> list[str]:
    """The teacher's seed, for a setting with several teachers of one recipe (each its own out-dir)."""
    return [f"teacher.train.seed={args.teacher_seed}"] if args.setting.teacher_seeds > 1 else []


def composed(args: argparse.Namespace, *overrides: str) -> DictConfig:
    """The config the runs get (the setting's overrides and the extra ones), composed as distill-train does."""
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose("train", overrides=[*common_overrides(args), *overrides])


def teacher_in_cache(args: argparse.Namespace, *overrides: str) -> bool:
    """Whether the cache holds the teacher the runs would train (another out-dir of the same recipe trained it),
    or with ``overrides`` naming an ensemble (``teachers=[...]``), every member. A key needs the data's identity,
    read here with data.download=false (the key leaves that flag out): --plan never downloads, and data that is
    not on this machine means no cached teacher."""
    cfg = composed(args, *overrides)
    offline = OmegaConf.merge(cfg.data, {"download": False}) if "download" in cfg.data else cfg.data
    try:
        identity = data_identity(offline)
    except DatasetNotFoundError:
        return False
    members = teacher_members(cfg)
    teachers = [cfg] if members is None else [fit_config(cfg, teacher=member) for member in members]
    return all(TeacherCache(args.cache_dir).has(teacher_cache_key(teacher, identity)) for teacher in teachers)


KEEP_EVERY_SECONDS = 60.0  # how often a row's finished seeds are kept while its other seeds train


def train(command: list[str], log_file: Path, while_running: Callable[[], object] | None = None,
          every: float = KEEP_EVERY_SECONDS) -> tuple[int, float]:
    """Run one distill-train command; its output goes to ``log_file`` (a benchmark's progress is one line each).
    ``while_running`` is called every ``every`` seconds while it runs, and once when it has ended."""
    start = time.perf_counter()
    with (log_file.open("a") as log,
          subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT) as process):
        try:
            while True:
                try:
                    returncode = process.wait(timeout=every if while_running else None)
                    break
                except subprocess.TimeoutExpired:
                    assert while_running is not None  # no timeout without it
                    while_running()
        except BaseException:  # as subprocess.run does: no training left running without its benchmark
            process.kill()
            raise
    if while_running is not None:
        while_running()
    return returncode, time.perf_counter() - start


def train_teacher(args: argparse.Namespace) -> dict | None:
    """The teacher first (cached by its config), so no student run's time includes it; read back when done."""
    folder = args.out_dir / "teacher"
    if not (folder / "metrics.json").is_file():
        command = [sys.executable, "-m", "distill.train", "stage=teacher", f"hydra.run.dir={folder}",
                   *common_overrides(args)]
        print(f"training: teacher ({args.teacher_epochs} epochs)", flush=True)
        code = commit()
        returncode, seconds = train(command, args.out_dir / "teacher.log")
        print(f"teacher {'ok' if returncode == 0 else 'FAILED'} in {seconds / 60:.1f} min", flush=True)
        if returncode != 0:
            return None
        record(args.out_dir, "teacher", command, seconds, returncode, code)
    return read_json(folder / "metrics.json")


def record(out_dir: Path, name: str, command: list[str], seconds: float, returncode: int, code: str) -> None:
    """The commit (``code``, taken when the training started) and command that trained ``name``, in records.json."""
    path = out_dir / "records.json"
    records = read_json(path) if path.is_file() else {}
    records[name] = {"commit": code, "command": shlex.join(["python", *command[1:]]), "wall_seconds": seconds,
                     "returncode": returncode, "finished_at": time.strftime("%Y-%m-%d %H:%M:%S")}
    write_json(path, records)


def run_method(method: Method, args: argparse.Namespace, keep: Callable[[], object] | None = None) -> bool:
    """Train the seeds of ``method`` that have no metrics.json yet; False if it was already complete.

    ``keep`` (the results folder's ``save_row`` for this row) is called while the seeds train, so each seed is
    kept within a minute of finishing: a sitting that ends in a row's last seed loses that seed only."""
    folder = args.out_dir / folder_name(method.name)
    if len(finished_seeds(folder, args.seeds)) == args.seeds:
        return False
    seeds = ",".join(str(s) for s in range(args.seeds))
    command = [sys.executable, "-m", "distill.train", "-m", f"seed={seeds}", f"hydra.sweep.dir={folder}",
               *common_overrides(args), *method.overrides]
    print(f"training: {method.name}", flush=True)
    code = commit()
    returncode, seconds = train(command, args.out_dir / f"{folder.name}.log", keep)
    print(f"{method.name:<36} {'ok' if returncode == 0 else 'FAILED'} in {seconds / 60:6.1f} min", flush=True)
    record(args.out_dir, method.name, command, seconds, returncode, code)
    return True
