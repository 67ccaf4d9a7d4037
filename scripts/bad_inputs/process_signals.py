"""A callback that sends the training process a real signal at a chosen batch (for the resume tests)."""

from __future__ import annotations

import os
import signal
from typing import Any

import lightning as L


class SignalAtBatch(L.Callback):
    """``os.kill(own pid, signal_name)`` at the start of batch ``batch`` of epoch ``epoch`` (of the fit whose
    global seed is ``seed``, when given): a SIGKILL there is a crash at that moment, nothing simulated."""

    def __init__(self, signal_name: str, epoch: int, batch: int, seed: int | None = None) -> None:
        self.signal = getattr(signal, signal_name)
        self.epoch, self.batch, self.seed = epoch, batch, seed

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        if self.seed is not None and os.environ.get("PL_GLOBAL_SEED") != str(self.seed):
            return
        if trainer.current_epoch == self.epoch and batch_idx == self.batch:
            os.kill(os.getpid(), self.signal)
