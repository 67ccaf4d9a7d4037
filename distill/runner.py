"""One run of ``distill-train`` once its config is composed: plan (distill/plan.py), get a teacher (load, reuse
or train), fit, then export, report, compress and summarise (distill/after_training.py). The command line
itself is distill/train.py; the schemes (distill/schemes/) call ``run_single`` once per model they train.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from distill.after_training import (
    compress_student,
    efficiency_report,
    stopped_after_training,
    summarize,
    training_line,
)
from distill.export import export_model
from distill.fit import fit_model, seed_everything
from distill.io import write_json
from distill.models import model_kwargs
from distill.plan import baseline_loss, prepare
from distill.ranks import is_rank_zero
from distill.reliability.interrupts import terminate_raises
from distill.reliability.resume import auto_resume_checkpoint, check_same_config, finished_run, record_run_config
from distill.reliability.run_clock import earlier_training_seconds
from distill.reliability.run_folder import check_unused, earlier_run, run_folder_lock
from distill.run_summary import describe_loss, print_summary
from distill.schemes import run_mutual, run_scheme
from distill.teacher.ensemble import obtain_teachers
from distill.teacher.logits_cache import cached_teacher_outputs
from distill.teacher.obtain import obtain_teacher
from distill.tracking import apply_to_wandb_loggers, sweep_dashboard_fields

log = logging.getLogger("distill")


def run(cfg: DictConfig, overrides: Sequence[str] = ()) -> float | None:
    """One run of the configured stage and scheme; returns the monitored metric for Hydra sweepers.

    ``overrides`` are the command line's (Hydra's task overrides): they tell an explicit value from a preset's.
    """
    output_dir = Path(cfg.paths.output_dir)
    if not is_rank_zero():  # DDP workers run this script too; rank zero holds the folder
        return run_locked(cfg, overrides, output_dir)
    with run_folder_lock(output_dir):
        return run_locked(cfg, overrides, output_dir)


def run_locked(cfg: DictConfig, overrides: Sequence[str], output_dir: Path) -> float | None:
    """``run`` once the run folder is held: finish, skip or refuse an earlier run there, then train."""
    if cfg.get("resume") in (True, "auto"):
        finished = finished_run(output_dir)
        last = None if finished is not None else auto_resume_checkpoint(output_dir)
        if earlier_run(output_dir) and not cfg.get("ckpt_path"):  # a teacher or link may have its checkpoints
            check_same_config(cfg, output_dir)
        if finished is not None:
            log.info("resume=auto: %s finished before (metrics.json); not run again", output_dir)
            return finished.get("monitored")
        if last and not cfg.get("ckpt_path"):
            log.info("resume=auto: continuing the unfinished run from %s", last)
            cfg.ckpt_path = last
    elif not cfg.get("ckpt_path") and is_rank_zero():
        check_unused(output_dir)
    (output_dir / "error.json").unlink(missing_ok=True)  # an earlier attempt's failure is not this run's
    if is_rank_zero():
        record_run_config(cfg, output_dir)
    # What earlier calls trained here or up to ckpt_path (a resumed model, a teacher or chain link finished
    # before), read before this call's checkpoints replace theirs; 0 for a new folder.
    earlier = earlier_training_seconds(output_dir, cfg.get("ckpt_path"))
    # A chain or born-again generations call run_single once per model (distill/schemes).
    start = time.perf_counter()
    summary = run_scheme(cfg, overrides, run_single)
    summary["seconds_this_call"] = time.perf_counter() - start
    # The run's cost: this call, and the training time of the calls it continued (None when a checkpoint of an
    # older version does not say: then this call only, as the field name says).
    summary["seconds_earlier_calls"] = earlier
    summary["seconds"] = summary["seconds_this_call"] + (earlier or 0.0)
    if is_rank_zero():  # DDP workers run this script too; one writes the summary
        write_json(output_dir / "metrics.json", summary)
        print_summary(summary)
    return summary["monitored"]


def run_single(cfg: DictConfig, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """Train the one model of ``cfg`` (the teacher, the student, or mutual learning's peers); return its summary."""
    output_dir = Path(cfg.paths.output_dir)
    plan = prepare(cfg)
    if cfg.stage == "mutual":
        return run_mutual(cfg, plan.datamodule, output_dir)
    if cfg.stage == "teacher":
        teacher_info = obtain_teacher(cfg, plan.model, plan.datamodule, output_dir)
        exported = None
        if is_rank_zero():
            exported = export_model(plan.model, cfg.teacher.name, model_kwargs(cfg.teacher, plan.datamodule),
                                    output_dir, stem="teacher", datamodule=plan.datamodule)
        fit = teacher_info.get("fit")
        summary = summarize(cfg, plan, None, teacher_info, exported)
        summary["teacher"]["metrics"] = fit["metrics"] if fit else None
        summary["wandb_sync"] = fit["wandb_sync"] if fit else []
        summary["report"] = efficiency_report(cfg, plan, output_dir, [])
        summary["compress"] = compress_student(cfg, plan, output_dir)  # teacher.onnx, checked (distill/compress)
        monitored = teacher_info.get("test_acc_top1")
    else:
        teacher_info = None
        if cfg.stage == "distill":
            assert plan.teacher is not None  # prepare() builds it for stage=distill
            teacher_info = obtain_teachers(cfg, plan.teacher, plan.datamodule, output_dir)
            loss_cfg = cfg.loss
        else:
            loss_cfg = baseline_loss(cfg.loss, overrides)
        teacher_outputs = None
        if plan.teacher is not None:
            assert plan.loss_terms is not None  # built with the teacher (stage=distill)
            teacher_outputs = cached_teacher_outputs(cfg, plan.teacher, plan.datamodule, plan.loss_terms)
        log.info("%s", training_line(cfg, plan, loss_cfg, cached=teacher_outputs is not None))
        seed_everything(cfg.seed)
        result = fit_model(cfg, plan.model, plan.datamodule, loss_cfg, cfg.optimizer, cfg.get("scheduler"),
                           teacher=plan.teacher, ckpt_path=plan.ckpt_path, keep_loggers_open=True,
                           teacher_outputs=teacher_outputs)
        try:
            # Training is over: a SIGTERM now (no Lightning handler any more) says so instead of ending silently.
            with terminate_raises(), stopped_after_training("the export and the efficiency report", result):
                exported = None
                if is_rank_zero():
                    exported = export_model(plan.model, plan.model_cfg.name,
                                            model_kwargs(plan.model_cfg, plan.datamodule), output_dir,
                                            stem="student", extra={"input_shape": list(plan.datamodule.input_shape)},
                                            datamodule=plan.datamodule)
                summary = summarize(cfg, plan, result, teacher_info, exported)
                summary["loss"] = describe_loss(loss_cfg)
                summary["report"] = efficiency_report(cfg, plan, output_dir, result.loggers)
        finally:
            result.close_loggers()
        teacher_fit = (teacher_info or {}).get("fit") or {}  # a teacher trained in this run has its own wandb run
        summary["wandb_sync"] = [*teacher_fit.get("wandb_sync", []), *result.wandb_sync]
        summary["compress"] = compress_student(cfg, plan, output_dir)
        monitored = result.monitored
    summary["monitored"] = monitored
    return summary


def run_command(cfg: DictConfig, overrides: Sequence[str], sweep_dir: str | None) -> float | None:
    """``run`` for the command line: a sweep's jobs are grouped in the dashboard (``sweep_dir``: the sweep's folder)."""
    if sweep_dir is not None:
        fields = sweep_dashboard_fields(sweep_dir, HydraConfig.get().runtime.choices.get("loss"), list(overrides))
        apply_to_wandb_loggers(cfg.get("logger"), fields)
    return run(cfg, overrides)
