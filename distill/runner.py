"""One run of ``distill-train`` once its config is composed: check the whole config, get a teacher (load, reuse
or train), distil, export, summarise. The command line itself is distill/train.py.
"""

from __future__ import annotations

import logging
import signal
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn

from distill.compress.settings import check_settings as check_compress_settings
from distill.config import instantiate_checked, to_dict
from distill.errors import ConfigError, InterruptedAfterTraining
from distill.export import export_model, load_exported
from distill.fit import FitResult, fit_model, seed_everything
from distill.io import write_json
from distill.losses import build_loss_terms
from distill.losses.base import LossTerm, check_sample_labels
from distill.models import check_input_fits, count_parameters, create_model
from distill.module import DistillationModule
from distill.obtain import model_kwargs, obtain_teacher
from distill.ranks import is_rank_zero
from distill.reliability.interrupts import terminate_raises
from distill.reliability.resume import (
    auto_resume_checkpoint,
    check_checkpoint,
    check_checkpoint_fits,
    check_same_config,
    finished_run,
    record_run_config,
)
from distill.reliability.run_folder import check_unused, earlier_run, run_folder_lock
from distill.reliability.schema import (
    check_monitor,
    check_top_k,
    check_trainer,
    run_metrics,
    validate_config,
)
from distill.report import ReportEntry, build_report, log_report, write_report
from distill.run_summary import describe_loss, print_summary
from distill.schemes import (
    build_teachers,
    check_scheme,
    obtain_teachers,
    run_mutual,
    run_scheme,
    teacher_report_entries,
)
from distill.teacher_outputs import cached_teacher_outputs
from distill.tracking import apply_to_wandb_loggers, sweep_dashboard_fields
from teachers import build_teacher

log = logging.getLogger("distill")

STAGES = ("distill", "teacher", "student", "mutual")  # mutual: distill/schemes/mutual.py


@dataclass
class Plan:
    """Everything checked and built before the first training step."""

    datamodule: Any
    model: nn.Module  # what this run trains: the student, or the teacher in stage=teacher
    model_cfg: DictConfig
    teacher: nn.Module | None
    ckpt_path: str | None


def prepare(cfg: DictConfig) -> Plan:
    """Validate every input that can be checked cheaply, so bad input fails before any training."""
    validate_config(cfg)  # first, as distill-train runs it: the same value gets the same message either way
    if cfg.stage not in STAGES:
        raise ConfigError(f"unknown stage '{cfg.stage}'; choose one of: {', '.join(STAGES)}")
    check_scheme(cfg)
    ckpt_path = cfg.get("ckpt_path")
    if ckpt_path and not Path(str(ckpt_path)).expanduser().is_file():
        raise ConfigError(f"ckpt_path={ckpt_path} does not exist; give the path of a run's checkpoints/last.ckpt")
    checkpoint = check_checkpoint(str(ckpt_path)) if ckpt_path else None
    check_trainer(cfg.trainer)
    datamodule = instantiate_checked(cfg.data)
    datamodule.check()
    check_top_k(cfg, datamodule.num_classes)
    check_monitor(cfg, run_metrics(cfg.stage, datamodule.num_classes, cfg.loss.keys()))
    datamodule.setup("fit")  # reads (and for image folders, scans) the data now: a bad file fails before training
    seed_everything(cfg.seed)
    model_cfg = cfg.teacher if cfg.stage == "teacher" else cfg.student
    role = "teacher" if cfg.stage == "teacher" else "student"
    if cfg.stage == "teacher":
        model = build_teacher(cfg.teacher, datamodule.num_classes, datamodule.in_chans, datamodule.input_shape)
    else:
        model = create_model(model_cfg.name, datamodule.num_classes, datamodule.in_chans, model_cfg.get("kwargs"),
                             role=role)
        check_input_fits(model, datamodule.input_shape, role, model_cfg.name)
    if cfg.stage != "teacher":
        check_compress_settings(cfg.get("compress"), has_teacher=cfg.stage == "distill")
    teacher = None
    if cfg.stage == "distill":
        teacher = build_teachers(cfg, datamodule.num_classes, datamodule.in_chans, datamodule.input_shape)
        model, model_cfg = wrap_student(cfg, model, teacher, datamodule)
        check_loss_terms(cfg, model, teacher, datamodule)
    if checkpoint is not None and cfg.stage != "mutual":  # mutual learning's checkpoint holds several peers
        check_checkpoint_fits(str(ckpt_path), checkpoint["state_dict"], model, role, model_cfg.name)
    return Plan(datamodule, model, model_cfg, teacher, str(ckpt_path) if ckpt_path else None)


def loss_terms(loss_cfg: DictConfig) -> list[LossTerm]:
    """The configured loss terms, built (their options checked)."""
    return [cast(LossTerm, term) for term in build_loss_terms(to_dict(loss_cfg)).values()]


def wrap_student(cfg: DictConfig, student: nn.Module, teacher: nn.Module,
                 datamodule: Any) -> tuple[nn.Module, DictConfig]:
    """The network the run trains, exports and measures: the student, or the larger one a loss term builds
    around it (SimKD: a projector and the teacher's classifier), with the model config that rebuilds it."""
    for term in loss_terms(cfg.loss):
        wrapped = term.wrap_student(student, to_dict(cfg.student.get("kwargs")), cfg.student.name, teacher,
                                    cfg.teacher.name, datamodule.input_shape)
        if wrapped is not None:
            log.info("%s", wrapped.note)
            return wrapped.model, OmegaConf.create({"name": wrapped.name, "kwargs": wrapped.kwargs,
                                                    "label": wrapped.label, "note": wrapped.note})
    return student, cfg.student


def check_loss_terms(cfg: DictConfig, student: nn.Module, teacher: nn.Module, datamodule: Any) -> None:
    """Build the loss terms and dry-run both networks: bad names, options and layers fail here, not mid-run.

    The module freezes the teacher (no gradients, eval mode); a teacher still to be trained gets both back.
    """
    trainable = [p.requires_grad for p in teacher.parameters()]
    was_training = teacher.training
    module = DistillationModule(
        student=student, teacher=teacher, loss_terms=build_loss_terms(to_dict(cfg.loss)),
        optimizer=instantiate(cfg.optimizer), num_classes=datamodule.num_classes, input_shape=datamodule.input_shape)
    module.remove_hooks()
    for name, term in module.loss_terms.items():
        if term.needs_sample_labels:
            check_sample_labels(name, datamodule)
    for parameter, flag in zip(teacher.parameters(), trainable):
        parameter.requires_grad_(flag)
    teacher.train(was_training)


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


def baseline_loss(loss_cfg: DictConfig, overrides: Sequence[str] = ()) -> DictConfig:
    """The undistilled baseline's loss: cross-entropy at weight 1, the preset's other CE options kept.

    A preset's CE weight is a mixing weight that sits beside its distillation terms (``loss=kd`` has 0.1):
    training the student alone on it would scale every step down while weight decay stays the same, a
    handicapped baseline. Only a CE weight set on the command line (``loss.ce.weight=w``) is used as given.
    """
    ce = to_dict(loss_cfg.get("ce"))
    explicit = [o for o in overrides if o.lstrip("+~").split("=", 1)[0] == "loss.ce.weight"]
    if explicit and "weight" in ce:
        reason = f"set on the command line ({explicit[-1]})"
    else:
        ce["weight"] = 1.0
        reason = ("the student alone trains on labels at full weight; the loss preset's CE weight is a mixing "
                  "weight for distillation (set loss.ce.weight=<w> to choose another)")
    if not ce["weight"]:
        raise ConfigError(f"stage=student trains on cross-entropy alone and {explicit[-1]} gives it weight 0: "
                          "nothing would be learned; leave loss.ce.weight out (the baseline uses 1)")
    log.info("stage=student: the undistilled baseline, cross-entropy with the labels alone at weight %g: %s",
             ce["weight"], reason)
    return OmegaConf.create({"ce": ce})


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
        (output_dir / "error.json").unlink(missing_ok=True)
    elif not cfg.get("ckpt_path") and is_rank_zero():
        check_unused(output_dir)
    if is_rank_zero():
        record_run_config(cfg, output_dir)
    # A chain or born-again generations call run_single once per model (distill/schemes).
    start = time.perf_counter()
    summary = run_scheme(cfg, overrides, run_single)
    summary["seconds"] = time.perf_counter() - start  # this call only: a resumed run counts its last part
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
                                    output_dir, stem="teacher")
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
            teacher_outputs = cached_teacher_outputs(cfg, plan.teacher, plan.datamodule)
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
                                            stem="student", extra={"input_shape": list(plan.datamodule.input_shape)})
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


def run_command(cfg: DictConfig, overrides: Sequence[str], sweep_dir: str | None) -> float | None:
    """``run`` for the command line: a sweep's jobs are grouped in the dashboard (``sweep_dir``: the sweep's folder)."""
    if sweep_dir is not None:
        fields = sweep_dashboard_fields(sweep_dir, HydraConfig.get().runtime.choices.get("loss"), list(overrides))
        apply_to_wandb_loggers(cfg.get("logger"), fields)
    return run(cfg, overrides)
