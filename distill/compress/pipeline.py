"""The compression steps in order, each leaving a deployable file beside ``student.json``, then one measured
row per variant in the run's efficiency report (``report.md``, ``report.json``, ``accuracy_vs_latency.png``).

Used by ``distill-train`` after the student is exported and by ``distill-compress`` on an existing run.
"""

from __future__ import annotations

import logging
import traceback
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from distill.compress import qat
from distill.compress.settings import check_settings
from distill.compress.step import STEPS, Variant, Workspace, row_order
from distill.compress.steps import onnx as onnx_step
from distill.compress.variants import measure_variant, plot_accuracy_vs_latency
from distill.errors import CompressionFailed
from distill.io import atomic_write, read_json, write_json
from distill.report import report_markdown, write_report

log = logging.getLogger("distill")

def test_images(datamodule: Any, count: int) -> torch.Tensor:
    """The first ``count`` test images: the export check runs on real data, not noise."""
    batches, taken = [], 0
    for images, *_ in datamodule.test_dataloader():
        batches.append(images[: count - taken])
        taken += len(batches[-1])
        if taken >= count:
            break
    return torch.cat(batches)


def workspace_for(cfg: DictConfig, model: nn.Module, teacher: nn.Module | None, datamodule: Any, run_dir: Path,
                  architecture: str, model_kwargs: dict[str, Any], steps: list[str]) -> Workspace:
    """What the steps work on: ``model`` (the student, or a teacher run's teacher) on the CPU in eval mode."""
    datamodule.setup("fit")
    datamodule.setup("test")
    return Workspace(cfg, model.cpu().eval(), teacher, datamodule, run_dir, architecture, model_kwargs,
                     test_images(datamodule, cfg.compress.onnx.check_images), steps)


def run_steps(workspace: Workspace) -> list[dict[str, Any]]:
    """Run the workspace's steps in order. The first that fails ends the sequence and is returned as a failure:
    the variants made before it are kept (and measured), and ``compress`` then fails the run."""
    workspace.add(Variant("PyTorch fp32", workspace.run_dir / "student.safetensors", workspace.student, "fp32"))
    for name in workspace.steps:
        try:
            STEPS[name].run(workspace)
        except Exception as error:
            log.error("compression step %s failed: %s: %s", name, type(error).__name__, error)
            return [{"step": name, "variant": STEPS[name].rows[0], "error": f"{type(error).__name__}: {error}",
                     "versions": qat.versions(), "traceback": traceback.format_exc()[-4000:]}]
    return []


def compress(cfg: DictConfig, student: nn.Module, teacher: nn.Module | None, datamodule: Any, run_dir: str | Path,
             architecture: str, model_kwargs: dict[str, Any]) -> dict[str, Any] | None:
    """Run the steps ``cfg.compress`` asks for and add the variants to the run's report; None when there are none.

    In a ``stage=teacher`` run the trained teacher comes as ``student`` (it is the run's model); only its
    checked ONNX export applies there, the other steps compress students.
    """
    if cfg.get("stage") == "teacher":
        return compress_teacher_run(cfg, student, datamodule, Path(run_dir))
    steps = check_settings(cfg.get("compress"), teacher is not None)
    if not steps:
        return None
    workspace = workspace_for(cfg, student, teacher, datamodule, Path(run_dir), architecture, model_kwargs, steps)
    failures = run_steps(workspace)
    rows = [measure_variant(variant, datamodule, cfg.compress.runtime) for variant in workspace.variants]
    summary = write_variants(Path(run_dir), rows, failures, steps, cfg.compress, datamodule)
    if failures:  # asked for and not made: the run fails, with what was made kept and reported
        failure = failures[0]
        raise CompressionFailed(failure["step"], failure["error"], Path(run_dir) / "compress.json")
    return summary


def compress_teacher_run(cfg: DictConfig, teacher: nn.Module, datamodule: Any, run_dir: Path) -> dict[str, Any] | None:
    """``teacher.onnx`` of a ``stage=teacher`` run, checked and measured like the student's export."""
    steps = check_settings(cfg.get("compress"), has_teacher=False, teacher_run=True)
    if not steps:
        return None
    skipped = [step for step in steps if STEPS[step].student_only]
    if skipped:
        log.warning("compress steps %s apply to students; a stage=teacher run exports only teacher.onnx", skipped)
    workspace = workspace_for(cfg, teacher, None, datamodule, run_dir, cfg.teacher.name, {}, ["onnx"])
    variant = onnx_step.convert(workspace, Variant("teacher", Path(), workspace.student, "fp32"), "teacher",
                                "teacher")
    return write_variants(run_dir, [measure_variant(variant, datamodule, cfg.compress.runtime)], [], ["onnx"],
                          cfg.compress, datamodule)


def merge_rows(earlier: list[dict[str, Any]], new: list[dict[str, Any]], run_dir: Path) -> list[dict[str, Any]]:
    """This call's rows, plus the rows of an earlier call that this one did not redo and whose file is still
    there (``distill-compress compress=qat`` after ``compress=prune`` keeps the pruned rows)."""
    names = {row["variant"] for row in new}
    kept = [row for row in earlier if row["variant"] not in names and (run_dir / row["file"]).is_file()]
    rank = {name: index for index, name in enumerate(row_order())}
    return sorted(kept + new, key=lambda row: rank.get(row["variant"], len(rank)))


def write_variants(run_dir: Path, rows: list[dict[str, Any]], failures: list[dict[str, Any]], steps: list[str],
                   settings: DictConfig, datamodule: Any) -> dict[str, Any]:
    """Add the rows to ``report.json``/``report.md`` (made when the run wrote none), plot them, keep a summary."""
    report_path = run_dir / "report.json"
    report = read_json(report_path) if report_path.is_file() else {
        "dataset": type(datamodule).__name__, "input_shape": list(datamodule.input_shape),
        "test_samples": rows[0]["accuracy"]["samples"], "models": [], "comparisons": []}
    report["variants"] = merge_rows(report.get("variants", []), rows, run_dir)
    report["variant_failures"] = [{k: v for k, v in f.items() if k != "traceback"} for f in failures]
    plot = plot_accuracy_vs_latency(report["variants"], run_dir / "accuracy_vs_latency.png",
                                    "variants: accuracy vs latency")
    if report["models"]:
        write_report(report, run_dir, title="accuracy vs MACs")
    else:
        write_json(report_path, report)
        atomic_write(run_dir / "report.md", lambda tmp: tmp.write_text(report_markdown(report)))
    summary = {"steps": steps, "settings": OmegaConf.to_container(settings, resolve=True), "variants": rows,
               "failures": failures, "files": {"report": str(run_dir / "report.md"), "plot": str(plot)}}
    write_json(run_dir / "compress.json", summary)
    return summary
