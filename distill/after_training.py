"""What a run does once training is over: the efficiency report, the compression steps, the summary.

Each reads the run's ``Plan`` (distill/plan.py) and the fit's result; ``stopped_after_training`` turns a SIGTERM
in these phases into an error that names the phase and the checkpoint a resume continues from.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from distill.compress.settings import check_settings as check_compress_settings
from distill.config import to_dict
from distill.errors import InterruptedAfterTraining
from distill.export import load_exported
from distill.fit import FitResult
from distill.models import count_parameters, model_kwargs
from distill.plan import Plan
from distill.ranks import is_rank_zero
from distill.report import ReportEntry, build_report, log_report, write_report
from distill.run_summary import describe_loss
from distill.teacher.ensemble import teacher_report_entries


def efficiency_report(cfg: DictConfig, plan: Plan, output_dir: Path, loggers: list[Any]) -> dict[str, Any] | None:
    """Measure teacher and student side by side (see distill/report.py); write and log the result."""
    if not cfg.report.enabled or not is_rank_zero():
        return None
    if cfg.stage == "teacher":
        entries = [ReportEntry("teacher", cfg.teacher.name, plan.model)]
    else:
        entries = teacher_report_entries(cfg, plan.teacher) if plan.teacher is not None else []
        entries.append(ReportEntry("student" if plan.teacher is not None else "baseline",
                                   plan.model_cfg.get("label", plan.model_cfg.name), plan.model))
    if cfg.report.baseline:
        baseline, description = load_exported(Path(str(cfg.report.baseline)).expanduser())
        entries.append(ReportEntry("baseline", description["architecture"], baseline))
    settings = to_dict(cfg.report)
    report = build_report(entries, plan.datamodule, settings)
    paths = write_report(report, output_dir, title=f"{cfg.stage}: accuracy vs MACs")
    log_report(loggers, report, paths["plot"])
    return {"files": {k: str(v) for k, v in paths.items()},
            "comparisons": [c["summary"] for c in report["comparisons"]]}


def compress_student(cfg: DictConfig, plan: Plan, output_dir: Path) -> dict[str, Any] | None:
    """The deployable variants ``compress`` asks for (distill/compress), each a row of the report; in
    ``stage=teacher`` the teacher's checked ONNX export.

    Imported only when asked for: onnxruntime, Torch-Pruning and torchao cost seconds to import.
    """
    if not is_rank_zero() or not check_compress_settings(cfg.get("compress")):
        return None
    from distill.compress.pipeline import compress

    result = compress(cfg, plan.model, plan.teacher, plan.datamodule, output_dir, plan.model_cfg.name,
                      model_kwargs(plan.model_cfg, plan.datamodule))
    assert result is not None  # the settings name at least one step
    variants = [{"variant": row["variant"], "file": row["file"], "bytes": row["bytes"],
                 "test_acc_top1": row["accuracy"]["top1"], "latency_ms": row["speed"]["latency_ms_batch1"]["median"]}
                for row in result["variants"]]
    return {"steps": result["steps"], "variants": variants}


def summarize(cfg: DictConfig, plan: Plan, result: FitResult | None, teacher_info: dict[str, Any] | None,
              exported: Path | None) -> dict[str, Any]:
    summary: dict[str, Any] = {"stage": cfg.stage, "run_dir": cfg.paths.output_dir}
    if teacher_info is not None:
        teacher_model = plan.teacher if plan.teacher is not None else plan.model
        summary["teacher"] = {**{k: v for k, v in teacher_info.items() if k != "fit"},
                              "params": count_parameters(teacher_model)}
        if result is not None and "test/teacher_acc_top1" in result.metrics:
            summary["teacher"]["test_acc_top1"] = result.metrics["test/teacher_acc_top1"]
    if result is not None:
        metrics = result.metrics
        summary["student"] = {
            "architecture": plan.model_cfg.get("label", plan.model_cfg.name),
            "params": count_parameters(plan.model),
            "test_acc_top1": metrics.get("test/acc_top1"),
            "test_acc_top5": metrics.get("test/acc_top5"),
            "best_" + cfg.monitor.replace("/", "_"): result.monitored,
            "skipped_batches": result.module.skipped_batches,  # non-finite losses, guard.on_non_finite=skip
        }
        if plan.model_cfg.get("note"):
            summary["student"]["note"] = plan.model_cfg.note
        if "test/agreement" in metrics:
            summary["student"]["test_agreement_with_teacher"] = metrics["test/agreement"]
        summary["metrics"] = metrics
        summary["checkpoints"] = {"best": result.best_checkpoint, "last": result.last_checkpoint}
    if exported is not None:
        summary["exported"] = str(exported)
    if getattr(plan.datamodule, "skipped_images", None):
        summary["skipped_images"] = plan.datamodule.skipped_images
    if getattr(plan.datamodule, "test_is_validation", False):
        summary["warnings"] = ["test split = validation split (it picked the best checkpoint): test top-1 is "
                               "optimistic; add a test/ folder"]
    return summary


def training_line(cfg: DictConfig, plan: Plan, loss_cfg: DictConfig, cached: bool) -> str:
    """The one line said when the student starts training: who teaches whom, with which loss, for how long."""
    student = (f"student {plan.model_cfg.get('label', plan.model_cfg.name)} "
               f"({count_parameters(plan.model):,} parameters)")
    schedule = f"loss {describe_loss(loss_cfg)}, {cfg.trainer.max_epochs} epochs"
    if plan.teacher is None:
        return f"training: {student}, {schedule}"
    teacher = f"ensemble of {len(cfg.teachers)}" if cfg.get("teachers") else cfg.teacher.name
    source = "teacher outputs from the cache" if cached else "live teacher"
    return f"distilling: teacher {teacher} -> {student}, {schedule}, {source}"


@contextmanager
def stopped_after_training(phase: str, result: FitResult) -> Iterator[None]:
    """Turn the SystemExit that ``terminate_raises`` makes of a SIGTERM into an ``InterruptedAfterTraining``
    naming ``phase`` and the checkpoint a resume continues from (the command line prints the command)."""
    try:
        yield
    except SystemExit as error:
        if error.code != 128 + signal.SIGTERM:
            raise
        trainer = result.module.trainer
        raise InterruptedAfterTraining(phase, signal.SIGTERM, result.last_checkpoint, trainer.current_epoch,
                                       trainer.global_step) from error
