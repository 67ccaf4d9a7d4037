"""Distillation that wins back what compression cost: the compressed network is trained as a student.

It reuses the project's own training (``fit_model`` and the DistillationModule), so any loss preset,
optimizer, trainer option and checkpoint behaviour of ``distill-train`` applies here as well.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from torch import nn

from distill.compress.checks import loss_preset_path
from distill.config import fit_config
from distill.fit import FitResult, fit_model, seed_everything

log = logging.getLogger(__name__)


def loss_config(preset: str | None, run_loss: DictConfig, key: str) -> DictConfig:
    """A loss preset of conf/loss by name, or the run's own loss when ``preset`` is None."""
    if preset is None:
        return run_loss
    loss = OmegaConf.load(loss_preset_path(preset, key))
    assert isinstance(loss, DictConfig), "a loss preset is a mapping of terms"
    return loss


def distill_into(cfg: DictConfig, student: nn.Module, teacher: nn.Module, datamodule: Any, folder: Path,
                 epochs: int, loss: DictConfig, lr: float | None = None) -> FitResult:
    """Train ``student`` under ``teacher`` for ``epochs`` with the run's optimizer, trainer and callbacks.

    Checkpoints go to ``folder``; no logger is opened (the run's own dashboard run is already closed),
    and the best weights are loaded back into ``student`` before it is returned.
    """
    overrides: dict[str, Any] = {"paths.output_dir": str(folder), "trainer.max_epochs": epochs, "logger": None}
    if lr is not None:
        overrides["optimizer.lr"] = lr
    fit_cfg = fit_config(cfg, **overrides)
    log.info("distilling the compressed model for %d epochs (loss: %s) in %s", epochs,
             "+".join(map(str, loss.keys())), folder)
    seed_everything(cfg.seed)
    result = fit_model(fit_cfg, student, datamodule, loss, fit_cfg.optimizer, fit_cfg.get("scheduler"),
                       teacher=teacher)
    result.close_loggers()
    return result
