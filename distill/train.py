"""``distill-train``: check the whole config, get a teacher (load, reuse or train), distil, export, summarise.

    distill-train                                  # digits, small teacher -> smaller student, softmax KD
    distill-train data=fashion_mnist teacher=cifar_resnet32x4 student=cifar_resnet8x4 loss.kd.temperature=8
    distill-train stage=teacher                    # train (and cache) the teacher alone
    distill-train stage=student                    # the undistilled baseline: the student on labels alone
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf
from torch import nn

from distill.compress.settings import check_settings as check_compress_settings
from distill.config import CONF_DIR, to_dict
from distill.data import DatasetNotFoundError, InMemoryDataModule
from distill.errors import ConfigError
from distill.export import export_model, load_exported
from distill.fit import FitResult, fit_model, seed_everything
from distill.io import write_json
from distill.losses import build_loss_terms
from distill.models import check_input_fits, count_parameters, create_model
from distill.module import DistillationModule
from distill.report import ReportEntry, build_report, log_report, write_report
from distill.teacher_cache import TeacherCache, teacher_cache_key
from distill.teacher_outputs import CachedTeacherOutputs, load_or_compute, teacher_outputs_key
from distill.tracking import apply_to_wandb_loggers, sweep_dashboard_fields
from teachers import TeacherSource, build_teacher
from teachers.build import teacher_source

log = logging.getLogger("distill")

STAGES = ("distill", "teacher", "student")


@dataclass
class Plan:
    """Everything checked and built before the first training step."""

    datamodule: Any
    model: nn.Module  # what this run trains: the student, or the teacher in stage=teacher
    model_cfg: DictConfig
    teacher: nn.Module | None
    ckpt_path: str | None


def model_kwargs(model_cfg: DictConfig, datamodule: Any) -> dict[str, Any]:
    """The kwargs that rebuild the model with ``timm.create_model`` (written beside exported weights)."""
    return {**to_dict(model_cfg.get("kwargs")), "num_classes": datamodule.num_classes,
            "in_chans": datamodule.in_chans}


def prepare(cfg: DictConfig) -> Plan:
    """Validate every input that can be checked cheaply, so bad input fails before any training."""
    if cfg.stage not in STAGES:
        raise ConfigError(f"unknown stage '{cfg.stage}'; choose one of: {', '.join(STAGES)}")
    ckpt_path = cfg.get("ckpt_path")
    if ckpt_path and not Path(str(ckpt_path)).expanduser().is_file():
        raise ConfigError(f"ckpt_path={ckpt_path} does not exist; give the path of a run's checkpoints/last.ckpt")
    datamodule = instantiate(cfg.data)
    datamodule.check()
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
        teacher = build_teacher(cfg.teacher, datamodule.num_classes, datamodule.in_chans, datamodule.input_shape)
        check_loss_terms(cfg, model, teacher, datamodule)
    return Plan(datamodule, model, model_cfg, teacher, str(ckpt_path) if ckpt_path else None)


def check_loss_terms(cfg: DictConfig, student: nn.Module, teacher: nn.Module, datamodule: Any) -> None:
    """Build the loss terms and dry-run both networks: bad names, options and layers fail here, not mid-run.

    The module freezes the teacher (no gradients, eval mode); a teacher still to be trained gets both back.
    """
    trainable = [p.requires_grad for p in teacher.parameters()]
    was_training = teacher.training
    module = DistillationModule(
        student=student, teacher=teacher, loss_terms=build_loss_terms(OmegaConf.to_container(cfg.loss, resolve=True)),
        optimizer=instantiate(cfg.optimizer), num_classes=datamodule.num_classes, input_shape=datamodule.input_shape)
    module.remove_hooks()
    for parameter, flag in zip(teacher.parameters(), trainable):
        parameter.requires_grad_(flag)
    teacher.train(was_training)


def fit_config(cfg: DictConfig, **overrides: Any) -> DictConfig:
    """A copy of ``cfg`` with dotted-key overrides (interpolations elsewhere follow them)."""
    copy = OmegaConf.create(OmegaConf.to_container(cfg, resolve=False))
    for key, value in overrides.items():
        OmegaConf.update(copy, key, value, merge=False)
    return copy


def obtain_teacher(cfg: DictConfig, teacher: nn.Module, datamodule: Any, output_dir: Path) -> dict[str, Any]:
    """Make ``teacher`` hold its final weights; return how (source, cache key, whether trained now, metrics)."""
    source = teacher_source(cfg.teacher)
    info: dict[str, Any] = {"architecture": cfg.teacher.name, "source": source.value}
    if source is TeacherSource.WEIGHTS_FILE:
        log.info("teacher %s: weights loaded from %s", cfg.teacher.name, cfg.teacher.weights)
        return {**info, "weights": str(cfg.teacher.weights)}
    if source is TeacherSource.HUB and cfg.teacher.train.max_epochs == 0:
        log.info("teacher %s: timm pretrained weights used as they are (teacher.train.max_epochs=0)", cfg.teacher.name)
        return info

    key = teacher_cache_key(cfg)
    train_dir = output_dir if cfg.stage == "teacher" else output_dir / "teacher"

    def train() -> dict[str, Any]:
        log.info("teacher %s: no cached weights for this config (key %s); training it for %d epochs in %s",
                 cfg.teacher.name, key, cfg.teacher.train.max_epochs, train_dir)
        teacher_cfg = fit_config(
            cfg, stage="teacher", run_name=f"teacher-{cfg.teacher.name}", **{
                "paths.output_dir": str(train_dir), "trainer.max_epochs": cfg.teacher.train.max_epochs})
        apply_to_wandb_loggers(teacher_cfg.get("logger"), {"job_type": "teacher"})
        seed_everything(cfg.teacher.train.seed)
        resume = cfg.get("ckpt_path") if cfg.stage == "teacher" else None
        result = fit_model(teacher_cfg, teacher, datamodule, cfg.teacher.train.loss, cfg.teacher.train.optimizer,
                           cfg.teacher.train.scheduler, ckpt_path=resume)
        return {"trained_in": str(train_dir), "metrics": result.metrics, "wandb_sync": result.wandb_sync,
                "best_checkpoint": result.best_checkpoint, "last_checkpoint": result.last_checkpoint}

    cache = TeacherCache(cfg.paths.cache_dir)
    summary, trained = cache.get_or_train(key, teacher, train, cfg.teacher.name, model_kwargs(cfg.teacher, datamodule))
    if not trained:
        log.info("teacher %s: reused cached weights %s (trained in %s)", cfg.teacher.name, cache.entry(key),
                 summary.get("trained_in"))
    teacher.eval()
    return {**info, "cache_key": key, "cache_entry": str(cache.entry(key)), "trained_now": trained,
            "test_acc_top1": summary["metrics"].get("test/acc_top1"), "trained_in": summary.get("trained_in"),
            "fit": summary if trained else None}


def efficiency_report(cfg: DictConfig, plan: Plan, output_dir: Path, loggers: list[Any]) -> dict[str, Any] | None:
    """Measure teacher and student side by side (see distill/report.py); write and log the result."""
    if not cfg.report.enabled or rank_zero_only.rank != 0:
        return None
    if cfg.stage == "teacher":
        entries = [ReportEntry("teacher", cfg.teacher.name, plan.model)]
    else:
        entries = [ReportEntry("teacher", cfg.teacher.name, plan.teacher)] if plan.teacher is not None else []
        entries.append(ReportEntry("student" if plan.teacher is not None else "baseline", plan.model_cfg.name,
                                   plan.model))
    if cfg.report.baseline:
        baseline, description = load_exported(Path(str(cfg.report.baseline)).expanduser())
        entries.append(ReportEntry("baseline", description["architecture"], baseline))
    settings = OmegaConf.to_container(cfg.report, resolve=True)
    report = build_report(entries, plan.datamodule, settings)
    paths = write_report(report, output_dir, title=f"{cfg.stage}: accuracy vs MACs")
    log_report(loggers, report, paths["plot"])
    return {"files": {k: str(v) for k, v in paths.items()},
            "comparisons": [c["summary"] for c in report["comparisons"]]}


def compress_student(cfg: DictConfig, plan: Plan, output_dir: Path) -> dict[str, Any] | None:
    """The deployable variants ``compress`` asks for (distill/compress), each a row of the report.

    Imported only when asked for: onnxruntime, Torch-Pruning and torchao cost seconds to import.
    """
    if rank_zero_only.rank != 0 or not check_compress_settings(cfg.get("compress")):
        return None
    from distill.compress.pipeline import compress

    result = compress(cfg, plan.model, plan.teacher, plan.datamodule, output_dir, plan.model_cfg.name,
                      model_kwargs(plan.model_cfg, plan.datamodule))
    variants = [{"variant": row["variant"], "file": row["file"], "bytes": row["bytes"],
                 "test_acc_top1": row["accuracy"]["top1"], "latency_ms": row["speed"]["latency_ms_batch1"]["median"]}
                for row in result["variants"]]
    return {"steps": result["steps"], "failures": [f["error"] for f in result["failures"]], "variants": variants}


def cached_teacher_outputs(cfg: DictConfig, teacher: nn.Module, datamodule: Any) -> CachedTeacherOutputs | None:
    """Teacher logits from the output cache when they cannot go stale; None (with the reason logged) otherwise."""
    settings = cfg.teacher_cache
    if not settings.enabled:
        return None
    loss_terms = build_loss_terms(to_dict(cfg.loss))
    feature_terms = [name for name, term in loss_terms.items() if term.teacher_layers]
    reason = None
    if not isinstance(datamodule, InMemoryDataModule):
        reason = f"{type(datamodule).__name__} does not index its samples"
    elif datamodule.augments:
        reason = (f"train-time augmentation (random_crop_padding={datamodule.random_crop_padding}, "
                  f"horizontal_flip={datamodule.horizontal_flip}) changes the teacher's input every epoch")
    elif feature_terms:
        reason = f"loss term(s) {feature_terms} read teacher features"
    if reason:
        log.info("teacher_cache: %s, so the teacher runs live", reason)
        return None
    temperature = next((term.temperature for term in loss_terms.values() if hasattr(term, "temperature")), None)
    if settings.top_k and temperature is None:
        raise ConfigError("teacher_cache.top_k keeps probabilities at the KD temperature, but no loss term has one")
    datamodule.setup("fit")
    key = teacher_outputs_key(teacher, to_dict(cfg.data), settings.top_k, temperature)
    splits = {name: split.images for name, split in datamodule.splits.items()}
    outputs = load_or_compute(cfg.paths.cache_dir, key, teacher, splits, datamodule.num_classes, settings.top_k,
                              temperature, settings.memory_mapped)
    log.info("teacher_cache: %.1f MiB of teacher outputs (%s)", outputs.nbytes / 2**20,
             "memory-mapped" if settings.memory_mapped else "in memory")
    return outputs


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
            "architecture": plan.model_cfg.name,
            "params": count_parameters(plan.model),
            "test_acc_top1": metrics.get("test/acc_top1"),
            "test_acc_top5": metrics.get("test/acc_top5"),
            "best_" + cfg.monitor.replace("/", "_"): result.monitored,
        }
        if "test/agreement" in metrics:
            summary["student"]["test_agreement_with_teacher"] = metrics["test/agreement"]
        summary["metrics"] = metrics
        summary["checkpoints"] = {"best": result.best_checkpoint, "last": result.last_checkpoint}
    if exported is not None:
        summary["exported"] = str(exported)
    return summary


def print_summary(summary: dict[str, Any]) -> None:
    lines = [f"== distill summary ({summary['stage']}) ==", f"{'model':<9}{'architecture':<24}{'params':>12}"
             f"{'test top-1':>12}"]
    for role in ("teacher", "student"):
        if role in summary:
            entry = summary[role]
            accuracy = entry.get("test_acc_top1")
            lines.append(f"{role:<9}{entry['architecture']:<24}{entry['params']:>12,}"
                         f"{(f'{accuracy:.4f}' if accuracy is not None else 'n/a'):>12}")
    if "teacher" in summary:
        teacher = summary["teacher"]
        origin = {True: " (in this run)", False: f" (reused from the cache: {teacher.get('cache_entry')})"}
        lines.append(f"teacher weights: {teacher['source']}{origin.get(teacher.get('trained_now'), '')}")
    for line in (summary.get("report") or {}).get("comparisons", []):
        lines.append(line)
    for row in (summary.get("compress") or {}).get("variants", []):
        lines.append(f"variant  {row['variant']:<24}{row['bytes']:>10,} B{100 * row['test_acc_top1']:>9.2f} %"
                     f"{row['latency_ms']:>9.3f} ms  {row['file']}")
    if summary.get("report"):
        lines.append(f"efficiency report: {summary['report']['files']['markdown']}")
    lines.append(f"run folder: {summary['run_dir']}")
    for command in summary.get("wandb_sync", []):
        lines.append(f"upload the offline wandb run with: {command}")
    print("\n".join(lines), flush=True)


def run(cfg: DictConfig) -> float | None:
    """One run of the configured stage; returns the monitored metric for Hydra sweepers."""
    plan = prepare(cfg)
    output_dir = Path(cfg.paths.output_dir)
    if cfg.stage == "teacher":
        teacher_info = obtain_teacher(cfg, plan.model, plan.datamodule, output_dir)
        exported = None
        if rank_zero_only.rank == 0:
            exported = export_model(plan.model, cfg.teacher.name, model_kwargs(cfg.teacher, plan.datamodule),
                                    output_dir, stem="teacher")
        fit = teacher_info.get("fit")
        summary = summarize(cfg, plan, None, teacher_info, exported)
        summary["teacher"]["metrics"] = fit["metrics"] if fit else None
        summary["wandb_sync"] = fit["wandb_sync"] if fit else []
        summary["report"] = efficiency_report(cfg, plan, output_dir, [])
        monitored = teacher_info.get("test_acc_top1")
    else:
        teacher_info = None
        if cfg.stage == "distill":
            teacher_info = obtain_teacher(cfg, plan.teacher, plan.datamodule, output_dir)
            loss_cfg = cfg.loss
        else:
            log.info("stage=student: the undistilled baseline, trained on cross-entropy with the labels alone")
            loss_cfg = OmegaConf.create({"ce": cfg.loss.get("ce") or {"weight": 1.0}})
        teacher_outputs = None
        if plan.teacher is not None:
            teacher_outputs = cached_teacher_outputs(cfg, plan.teacher, plan.datamodule)
        seed_everything(cfg.seed)
        result = fit_model(cfg, plan.model, plan.datamodule, loss_cfg, cfg.optimizer, cfg.get("scheduler"),
                           teacher=plan.teacher, ckpt_path=plan.ckpt_path, keep_loggers_open=True,
                           teacher_outputs=teacher_outputs)
        try:
            exported = None
            if rank_zero_only.rank == 0:
                exported = export_model(plan.model, plan.model_cfg.name,
                                        model_kwargs(plan.model_cfg, plan.datamodule), output_dir, stem="student",
                                        extra={"input_shape": list(plan.datamodule.input_shape)})
            summary = summarize(cfg, plan, result, teacher_info, exported)
            summary["report"] = efficiency_report(cfg, plan, output_dir, result.loggers)
        finally:
            result.close_loggers()
        summary["wandb_sync"] = result.wandb_sync
        summary["compress"] = compress_student(cfg, plan, output_dir)
        monitored = result.monitored
    if rank_zero_only.rank == 0:  # DDP workers run this script too; one writes the summary
        write_json(output_dir / "metrics.json", summary)
        print_summary(summary)
    return monitored


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="train")
def hydra_main(cfg: DictConfig) -> float | None:
    hydra_cfg = HydraConfig.get()
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    if multirun:
        fields = sweep_dashboard_fields(hydra_cfg.sweep.dir, hydra_cfg.runtime.choices.get("loss"),
                                        list(hydra_cfg.overrides.task))
        apply_to_wandb_loggers(cfg.get("logger"), fields)
    try:
        return run(cfg)
    except Exception as error:
        # The run folder says why it failed, so distill-summarize can list the failure beside the results.
        write_json(Path(cfg.paths.output_dir) / "error.json",
                   {"error": f"{type(error).__name__}: {error}", "overrides": list(hydra_cfg.overrides.task)})
        if multirun or not isinstance(error, (ConfigError, DatasetNotFoundError)):
            raise  # in a sweep Hydra finishes the other jobs, then reports this one
        log.error("error: %s", error)
        sys.exit(2)


def main() -> None:
    hydra_main()


if __name__ == "__main__":
    main()
