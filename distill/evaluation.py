"""The work of ``distill-eval`` (distill/evaluate.py): the efficiency report for run folders, a sweep folder, or one
saved model.

See conf/eval.yaml for the forms it takes. Every model is measured on the same test split and device,
and the report (``report.json``, ``report.md``, ``accuracy_vs_macs.png``) goes to the eval's own folder.

torch, timm and the report are imported by the functions that use them: a run folder, config or model path that
is not what it should be is refused before those imports, in a second rather than five.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hydra.utils import instantiate
from omegaconf import DictConfig

from distill.config import load_config, to_dict
from distill.errors import ConfigError
from distill.io import read_json
from distill.run_files import check_exported, check_safetensors, read_json_object, read_run_config

if TYPE_CHECKING:
    from torch import nn

    from distill.report import ReportEntry

log = logging.getLogger("distill")


def find_runs(folders: list[str]) -> list[Path]:
    """Run folders (those holding metrics.json or .hydra/config.yaml) at or below each folder given."""
    runs: list[Path] = []
    for name in folders:
        folder = Path(str(name)).expanduser()
        if not folder.exists():
            raise ConfigError(f"runs: {folder} does not exist; give run folders or a sweep folder")
        if not folder.is_dir():
            raise ConfigError(f"runs: {folder} is a file, not a folder; give run folders or a sweep folder (a model "
                              f"file is model={folder})")
        if (folder / ".hydra" / "config.yaml").is_file():
            runs.append(folder)
            continue
        found = sorted(p.parent.parent for p in folder.glob("*/.hydra/config.yaml"))
        if not found:
            raise ConfigError(f"runs: {folder} holds no distill run (no .hydra/config.yaml in it or its sub-folders)")
        runs += found
    return runs


def load_run_config(folder: Path) -> DictConfig:
    """A run's ``.hydra/config.yaml``, checked first (valid YAML, a mapping, the keys of a distill run): a folder of
    another application is refused by name instead of failing on its first missing key. Its summary and exported
    student are checked too (JSON, keys, a whole weights file), all before torch is imported."""
    read_run_config(folder)
    if (folder / "metrics.json").is_file():
        read_json_object(folder / "metrics.json")
    if (folder / "student.json").is_file():
        check_exported(folder / "student.json")
    return load_config(folder / ".hydra" / "config.yaml")


def model_file(model: Any) -> Path | None:
    """The file ``model=`` names, checked to be one; None when it names none."""
    if not model:
        return None
    path = Path(str(model)).expanduser()
    if not path.exists():
        raise ConfigError(f"model={path} does not exist")
    if not path.is_file():
        raise ConfigError(f"model={path} is a folder, not a model file; give its exported .json (student.json), or "
                          f"evaluate a run folder with runs=[{path}]")
    if path.suffix == ".json":
        check_exported(path)
    elif path.suffix == ".safetensors":
        check_safetensors(path)
    return path


def load_model_file(path: Path, architecture: str | None, kwargs: dict[str, Any], datamodule: Any) -> nn.Module:
    """An exported .json, or a weights file / checkpoint for ``architecture`` (checked against the data)."""
    from distill.export import load_exported
    from distill.models import create_model, load_weights

    if path.suffix == ".json":
        model, description = load_exported(path)
        expected = {"num_classes": datamodule.num_classes, "in_chans": datamodule.in_chans}
        actual = {key: description["model_kwargs"].get(key) for key in expected}
        if actual != expected:
            raise ConfigError(f"{path} was exported for {actual} but the data has {expected}; choose matching data")
        return model
    if not architecture:
        raise ConfigError(f"model={path} is not an exported .json: say which architecture it holds "
                          "(architecture=<timm name> model_kwargs={...})")
    model = create_model(architecture, datamodule.num_classes, datamodule.in_chans, kwargs, role="architecture")
    load_weights(model, path, role=f"model '{architecture}'")
    return model


def run_entries(run_dir: Path, run_cfg: DictConfig, datamodule: Any) -> list[ReportEntry]:
    """The student (or baseline) of a run, and its teacher when the run had one."""
    from distill.report import ReportEntry

    summary = read_json_object(run_dir / "metrics.json") if (run_dir / "metrics.json").is_file() else {}
    tag = f"{run_dir.name}" + (f" ({'+'.join(run_cfg.loss)})" if run_cfg.stage == "distill" else "")
    entries = []
    teacher_source = None
    teacher_info = summary.get("teacher")
    if not isinstance(teacher_info, dict):  # none: a run without a teacher (stage=student) has no entry
        teacher_info = {}
    if teacher_info.get("cache_entry"):
        teacher_source = Path(teacher_info["cache_entry"]) / "teacher.json"
    elif teacher_info.get("weights"):
        teacher_source = Path(teacher_info["weights"])
    elif (run_dir / "teacher.json").is_file():
        teacher_source = run_dir / "teacher.json"
    if teacher_source is not None:
        teacher = load_model_file(teacher_source, run_cfg.teacher.name, to_dict(run_cfg.teacher.get("kwargs")),
                                  datamodule)
        entries.append(ReportEntry("teacher", run_cfg.teacher.name, teacher, f"teacher: {run_cfg.teacher.name}",
                                   source=str(teacher_source.resolve())))
    if run_cfg.stage == "teacher":
        return entries
    role = "student" if run_cfg.stage == "distill" else "baseline"
    exported = run_dir / "student.json"
    checkpoints = [run_dir / "checkpoints" / name for name in ("best.ckpt", "last.ckpt")]
    source = exported if exported.is_file() else next((c for c in checkpoints if c.is_file()), None)
    if source is None:
        raise ConfigError(f"run folder {run_dir} has no exported student (student.json) and no checkpoint "
                          "(checkpoints/best.ckpt or last.ckpt); was the run interrupted before its first epoch?")
    student = load_model_file(source, run_cfg.student.name, to_dict(run_cfg.student.get("kwargs")), datamodule)
    entries.append(ReportEntry(role, run_cfg.student.name, student, f"{role}: {run_cfg.student.name} {tag}"))
    return entries


def unique_teachers(entries: list[ReportEntry]) -> list[ReportEntry]:
    """Runs of a sweep share their teacher: measure each teacher (by weights file) once."""
    seen, kept = set(), []
    for entry in entries:
        if entry.role == "teacher":
            if entry.source in seen:
                continue
            seen.add(entry.source)
        kept.append(entry)
    return kept


def evaluate(cfg: DictConfig, output_dir: Path) -> dict[str, Any]:
    runs = find_runs(list(cfg.runs)) if cfg.runs else []
    run_cfgs = {run: load_run_config(run) for run in runs}
    if cfg.get("data") is not None:
        data_cfg = cfg.data
    elif runs:
        data_cfg = run_cfgs[runs[0]].data
    else:
        raise ConfigError("give the data to evaluate on (data=digits, data=fashion_mnist, ...) or a run folder")
    if not runs and not cfg.model:
        raise ConfigError("nothing to evaluate: give runs=[<run or sweep folder>, ...] or model=<file>")
    model_path = model_file(cfg.model)
    from distill.report import ReportEntry, build_report, write_report  # torch: once the paths passed their checks

    datamodule = instantiate(data_cfg)
    datamodule.check()
    entries: list[ReportEntry] = []
    for run in runs:
        entries += run_entries(run, run_cfgs[run], datamodule)
    if model_path is not None:
        model = load_model_file(model_path, cfg.architecture, to_dict(cfg.model_kwargs), datamodule)
        architecture = cfg.architecture or read_json(model_path)["architecture"]
        entries.append(ReportEntry("model", architecture, model, cfg.label or f"model: {architecture}"))
    report = build_report(unique_teachers(entries), datamodule, to_dict(cfg.report))
    write_report(report, output_dir, title="accuracy vs MACs")
    return report
