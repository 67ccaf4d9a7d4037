"""A teacher's final weights: loaded from a file or the hub, or trained here and cached by its recipe."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig
from torch import nn

from distill.config import fit_config
from distill.errors import ConfigError
from distill.fit import fit_model, seed_everything
from distill.models import model_kwargs
from distill.reliability.resume import resume_checkpoint
from distill.teacher.weights_cache import TeacherCache, teacher_cache_key
from distill.tracking import apply_to_wandb_loggers
from teachers import TeacherSource
from teachers.build import teacher_source

log = logging.getLogger("distill")


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

    key = teacher_cache_key(cfg, datamodule.identity())
    train_dir = output_dir if cfg.stage == "teacher" else output_dir / "teacher"

    def train() -> dict[str, Any]:
        log.info("teacher %s: no cached weights for this config (key %s); training it for %d epochs in %s",
                 cfg.teacher.name, key, cfg.teacher.train.max_epochs, train_dir)
        teacher_cfg = fit_config(
            cfg, stage="teacher", run_name=f"teacher-{cfg.teacher.name}", **{
                "paths.output_dir": str(train_dir), "trainer.max_epochs": cfg.teacher.train.max_epochs})
        apply_to_wandb_loggers(teacher_cfg.get("logger"), {"job_type": "teacher"})
        seed_everything(cfg.teacher.train.seed)
        # stage=teacher: the run's own checkpoint; a student run's teacher continues from <run>/teacher/ on resume.
        resume = (cfg.get("ckpt_path") if cfg.stage == "teacher"
                  else resume_checkpoint(cfg, train_dir, f"teacher {cfg.teacher.name}"))
        result = fit_model(teacher_cfg, teacher, datamodule, cfg.teacher.train.loss, cfg.teacher.train.optimizer,
                           cfg.teacher.train.scheduler, ckpt_path=resume)
        if result.module.trainer.global_step == 0:  # limit_train_batches=0, max_steps=0: nothing was trained
            raise ConfigError(f"teacher {cfg.teacher.name} trained for 0 optimizer steps (see "
                              "trainer.limit_train_batches, trainer.max_steps): an untrained teacher is neither cached "
                              "nor distilled from; let it train at least one step")
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
