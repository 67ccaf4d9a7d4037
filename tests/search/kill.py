"""A callback that SIGKILLs the search in the middle of its ``nth`` trained fit under ``trials/`` (for the resume
test): a crash at that moment, nothing simulated."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import lightning as L


class KillInTrial(L.Callback):
    def __init__(self, marker: str, nth: int) -> None:
        self.marker, self.nth = Path(marker), nth

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        folder = str(getattr(trainer.checkpoint_callback, "dirpath", ""))
        if "/trials/" not in folder or trainer.current_epoch != 1 or self.marker.with_suffix(".done").exists():
            return
        seen = set(self.marker.read_text().split()) if self.marker.exists() else set()
        seen.add(folder)
        self.marker.write_text("\n".join(sorted(seen)))
        if len(seen) >= self.nth:
            self.marker.with_suffix(".done").touch()
            os.kill(os.getpid(), signal.SIGKILL)
