"""One fit: build the Lightning module, trainer, callbacks and loggers from config; fit; test the best weights."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ModelCheckpoint, ProgressBar
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf
from torch import nn

from distill.config import to_dict
from distill.losses import build_loss_terms
from distill.module import DistillationModule
from distill.reliability.checkpoints import AtomicCheckpointIO, LastCheckpoint
from distill.reliability.interrupts import CheckpointOnSignal
from distill.reliability.run_clock import with_training_timer
from distill.reliability.seeding import StepSeeder
from distill.teacher.stored_logits import CachedTeacherOutputs
from distill.tracking import close_loggers, keep_csv_rows_on_resume

log = logging.getLogger(__name__)
# The frozen teacher is in eval mode on purpose; Lightning warns about any module that is.
warnings.filterwarnings("ignore", message=r".*module\(s\) in eval mode at the start of training.*")
# Lightning 2.6 calls a torch API that torch 2.14 deprecated, once per fit; nothing a user can act on.
warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")
# Lightning's start-up lines (GPU/TPU available, a product tip) and checkpoint-restore notes: the run's own log
# says what runs where; Lightning's warnings still show.
logging.getLogger("lightning.pytorch.utilities.rank_zero").setLevel(logging.WARNING)
logging.getLogger("timm.models._helpers").setLevel(logging.WARNING)  # "Loaded ... from checkpoint": ours says which


@dataclass
class FitResult:
    module: L.LightningModule  # a DistillationModule, or the peers of mutual learning
    metrics: dict[str, float]
    best_checkpoint: str | None
    last_checkpoint: str | None
    monitored: float | None
    loggers: list[Any] = field(default_factory=list)
    wandb_sync: list[str] = field(default_factory=list)

    def close_loggers(self) -> list[str]:
        """Finish the run's loggers (wandb: close the run, note the sync command); safe to call twice."""
        self.wandb_sync += close_loggers(self.loggers)
        self.loggers = []
        return self.wandb_sync


def instantiate_group(group: DictConfig | None) -> list[Any]:
    """Instantiate every entry of a dict-of-configs group (callbacks, loggers); null entries are skipped."""
    if not group:
        return []
    return [instantiate(entry) for entry in group.values() if entry is not None and "_target_" in entry]


def fit_model(
    cfg: DictConfig,
    student: nn.Module,
    datamodule: Any,
    loss_cfg: DictConfig,
    optimizer_cfg: DictConfig,
    scheduler_cfg: DictConfig | None,
    teacher: nn.Module | None = None,
    ckpt_path: str | None = None,
    keep_loggers_open: bool = False,
    teacher_outputs: CachedTeacherOutputs | None = None,
    extra_callbacks: Sequence[L.Callback] = (),
) -> FitResult:
    """Train ``student`` (with ``teacher`` when given) under ``cfg.trainer``, then test its best weights.

    With ``keep_loggers_open`` the caller logs more (the efficiency report) and closes them with
    ``FitResult.close_loggers``; on an error they are always closed.
    """
    loss_terms = build_loss_terms(to_dict(loss_cfg))
    module = DistillationModule(
        student=student,
        teacher=teacher,
        loss_terms=loss_terms,
        optimizer=instantiate(optimizer_cfg),
        scheduler=instantiate(scheduler_cfg) if scheduler_cfg else None,
        num_classes=datamodule.num_classes,
        input_shape=datamodule.input_shape,
        teacher_outputs=teacher_outputs,
        channels_last=cfg.acceleration.channels_last,
        compile_student=cfg.acceleration.compile_student,
        on_non_finite=OmegaConf.select(cfg, "guard.on_non_finite", default="error"),
        max_skipped_batches=OmegaConf.select(cfg, "guard.max_skipped_batches", default=None),
    )
    return fit_module(cfg, module, datamodule, ckpt_path, keep_loggers_open, extra_callbacks)


def fit_module(cfg: DictConfig, module: L.LightningModule, datamodule: L.LightningDataModule,
               ckpt_path: str | None = None, keep_loggers_open: bool = False,
               extra_callbacks: Sequence[L.Callback] = ()) -> FitResult:
    """Fit any LightningModule of ours under ``cfg.trainer``, callbacks and loggers, then test its best weights.

    ``extra_callbacks``: callbacks a caller adds in code (a search's pruning callback, which holds its trial).
    """
    callbacks = [*instantiate_group(cfg.get("callbacks")), *extra_callbacks]
    if cfg.trainer.get("enable_progress_bar") is False:  # Lightning refuses a progress-bar callback then
        callbacks = [cb for cb in callbacks if not isinstance(cb, ProgressBar)]
    # Not optional, so not in the callbacks config: exact resume and a checkpoint on SIGTERM/Ctrl-C.
    on_signal = CheckpointOnSignal()
    callbacks += [StepSeeder(), on_signal]
    # Keeps the training time in every checkpoint, so a resumed run reports all it cost (reliability/run_clock).
    callbacks = with_training_timer(callbacks, cfg.trainer.get("max_time"))
    loggers = instantiate_group(cfg.get("logger"))
    if ckpt_path is not None:  # before anything opens the loggers' folders
        keep_csv_rows_on_resume(loggers)
    # Checkpoints written atomically, unless the config brings its own plugins.
    plugins = None if cfg.trainer.get("plugins") else [AtomicCheckpointIO()]
    trainer: L.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False,
                                     **({"plugins": plugins} if plugins else {}))
    config_container = OmegaConf.to_container(cfg, resolve=True)
    for logger in loggers:
        logger.log_hyperparams(config_container)
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
        # The monitored value as fit left it: testing replaces the trainer's metrics, and without a best checkpoint
        # (fast_dev_run saves none) a sweeper still needs a number.
        fit_monitor = trainer.callback_metrics.get(cfg.get("monitor", ""))
        checkpoint = next((cb for cb in callbacks if isinstance(cb, ModelCheckpoint) and cb.monitor), None)
        last_writer = next((cb for cb in callbacks if isinstance(cb, LastCheckpoint)), None)
        # Read now: testing from best.ckpt restores the callbacks' state as it was when best.ckpt was written.
        last = last_writer.last_model_path if last_writer is not None and last_writer.last_model_path else None
        best = checkpoint.best_model_path if checkpoint is not None and checkpoint.best_model_path else None
        # The weights as training left them, before "best" replaces them (benchmarks report both numbers).
        last_test = trainer.test(module, datamodule=datamodule, verbose=False) if cfg.get("test_last") else []
        # Testing "best" loads the best weights into the module, so what we export is what we test.
        trainer.test(module, datamodule=datamodule, ckpt_path=best, weights_only=True, verbose=False)
    except BaseException as error:
        close_loggers(loggers)
        if isinstance(error, SIGTERMException) and on_signal.stopped is not None:
            raise on_signal.stopped from error
        raise
    metrics = {key: float(value) for key, value in trainer.callback_metrics.items() if torch.is_tensor(value)}
    metrics |= {key.replace("test/", "test_last/", 1): float(value) for key, value in (last_test or [{}])[0].items()}
    monitored = None
    if checkpoint is not None and checkpoint.best_model_score is not None:
        monitored = float(checkpoint.best_model_score)
    elif cfg.get("monitor") in metrics:
        monitored = metrics[cfg.monitor]
    elif torch.is_tensor(fit_monitor):
        monitored = float(fit_monitor)
    role = "teacher" if cfg.get("stage") == "teacher" else "student"
    name = OmegaConf.select(cfg, f"{role}.name", default="")
    tested = ", ".join(f"{key.removeprefix('test/')} {value:.4f}" for key, value in sorted(metrics.items())
                       if key.startswith("test/"))
    log.info("%s %s, %s weights on the test split: %s", role, name, "best" if best else "last", tested)
    result = FitResult(module, metrics, best, last, monitored, loggers)
    if not keep_loggers_open:
        result.close_loggers()
    return result


def seed_everything(seed: int) -> None:
    L.seed_everything(seed, workers=True, verbose=False)
