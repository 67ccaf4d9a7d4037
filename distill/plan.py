"""A run's plan: every input checked and every model built before the first training step.

``prepare`` validates the config, reads the data, builds the student (wrapped when a loss term asks, as SimKD
does), the teacher or ensemble and the loss terms, and dry-runs them together, so that bad input fails in
seconds. The stage=student baseline's loss (``baseline_loss``) is decided here too.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn

from distill.compress.settings import check_settings as check_compress_settings
from distill.config import instantiate_checked, to_dict
from distill.config.schema import check_monitor, check_top_k, check_trainer, run_metrics, validate_config
from distill.config.schemes import check_scheme
from distill.errors import ConfigError
from distill.fit import seed_everything
from distill.losses import build_loss_terms
from distill.losses.base import LossTerm, check_sample_labels
from distill.models import check_input_fits, create_model
from distill.module import DistillationModule
from distill.reliability.resume import check_checkpoint, check_checkpoint_fits
from distill.teacher.ensemble import build_teachers
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
    # stage=distill: the configured terms, built (options checked) and dry-run once here; the cache policy reads
    # them. Training builds its own after the run's seed is set again, so adapter weights do not depend on what
    # ran before.
    loss_terms: nn.ModuleDict | None = None


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
    teacher, terms = None, None
    if cfg.stage == "distill":
        teacher = build_teachers(cfg, datamodule.num_classes, datamodule.in_chans, datamodule.input_shape)
        terms = build_loss_terms(to_dict(cfg.loss))
        model, model_cfg = wrap_student(cfg, terms, model, teacher, datamodule)
        check_loss_terms(cfg, terms, model, teacher, datamodule)
    if checkpoint is not None and cfg.stage != "mutual":  # mutual learning's checkpoint holds several peers
        check_checkpoint_fits(str(ckpt_path), checkpoint["state_dict"], model, role, model_cfg.name)
    return Plan(datamodule, model, model_cfg, teacher, str(ckpt_path) if ckpt_path else None, terms)


def wrap_student(cfg: DictConfig, terms: nn.ModuleDict, student: nn.Module, teacher: nn.Module,
                 datamodule: Any) -> tuple[nn.Module, DictConfig]:
    """The network the run trains, exports and measures: the student, or the larger one a loss term builds
    around it (SimKD: a projector and the teacher's classifier), with the model config that rebuilds it."""
    for term in terms.values():
        wrapped = cast(LossTerm, term).wrap_student(student, to_dict(cfg.student.get("kwargs")), cfg.student.name,
                                                    teacher, cfg.teacher.name, datamodule.input_shape)
        if wrapped is not None:
            log.info("%s", wrapped.note)
            return wrapped.model, OmegaConf.create({"name": wrapped.name, "kwargs": wrapped.kwargs,
                                                    "label": wrapped.label, "note": wrapped.note})
    return student, cfg.student


def check_loss_terms(cfg: DictConfig, terms: nn.ModuleDict, student: nn.Module, teacher: nn.Module,
                     datamodule: Any) -> None:
    """Dry-run both networks with the loss terms: bad layers and shapes fail here, not mid-run.

    The module freezes the teacher (no gradients, eval mode); a teacher still to be trained gets both back.
    """
    trainable = [p.requires_grad for p in teacher.parameters()]
    was_training = teacher.training
    module = DistillationModule(
        student=student, teacher=teacher, loss_terms=terms,
        optimizer=instantiate(cfg.optimizer), num_classes=datamodule.num_classes, input_shape=datamodule.input_shape)
    module.remove_hooks()
    for name, term in module.loss_terms.items():
        if term.needs_sample_labels:
            check_sample_labels(name, datamodule)
    for parameter, flag in zip(teacher.parameters(), trainable):
        parameter.requires_grad_(flag)
    teacher.train(was_training)


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
