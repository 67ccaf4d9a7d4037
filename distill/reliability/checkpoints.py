"""The one writer of ``checkpoints/last.ckpt``: the newest state of a run, whatever else is saved.

Lightning's ``save_last`` writes "last" only when that callback also saved a checkpoint at the same step,
so a best-only ``ModelCheckpoint`` leaves ``last.ckpt`` at the best epoch, and a second callback with
``save_last`` then writes ``last-v1.ckpt`` beside it: resuming from ``last.ckpt`` went back in time.
Here the best checkpoint is kept by a ``ModelCheckpoint`` without ``save_last``, and this callback writes
``last.ckpt`` at every epoch end (after validation, so the state includes it), every ``every_n_train_steps``
optimizer steps when asked, and when training ends.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.trainer.states import TrainerFn

from distill.io import atomic_write


class LastCheckpoint(ModelCheckpoint):
    """``last.ckpt`` in ``dirpath``: written at each epoch end, every ``every_n_train_steps`` steps (0: never
    mid-epoch), and at the end of training; always the run's newest state."""

    def __init__(self, dirpath: str, every_n_train_steps: int = 0, **kwargs: Any) -> None:
        super().__init__(dirpath=dirpath, monitor=None, save_top_k=0, save_last=True,
                         every_n_train_steps=every_n_train_steps, every_n_epochs=0,
                         enable_version_counter=False, **kwargs)

    @property
    def state_key(self) -> str:
        return "LastCheckpoint"

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._should_save_on_train_epoch_end(trainer):
            self._save_epoch_end(trainer)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self._should_save_on_train_epoch_end(trainer):
            self._save_epoch_end(trainer)

    def _save_epoch_end(self, trainer: L.Trainer) -> None:
        # Also when a step checkpoint was written at this step: the epoch-end state (validation done, epoch
        # counted) is the one a resumed run must start from.
        if getattr(trainer, "fast_dev_run", False) or trainer.sanity_checking or trainer.state.fn != TrainerFn.FITTING:
            return
        self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints written by ``atomic_write``: to a temporary file beside the target, fsynced, renamed into place.

    Lightning's own save goes through an fsspec transaction whose temporary file lives in /tmp (a copy, not a
    rename, when that is another file system) and is never fsynced; on a full disk a run was left with a 0-byte
    checkpoint. Here a failed save leaves the previous checkpoint, and lack of space is ``DiskFull``.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if storage_options is not None or "://" in str(path):  # remote storage: Lightning's own transaction
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        atomic_write(path, lambda tmp: torch.save(checkpoint, tmp))
