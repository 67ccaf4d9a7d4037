"""The progress bar: Lightning's TQDM bar, plus the values the module keeps as host numbers (the step loss)."""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.callbacks import TQDMProgressBar


class StepValuesProgressBar(TQDMProgressBar):
    """``TQDMProgressBar`` that also shows ``pl_module.progress_values`` (floats refreshed every few steps).

    The module keeps its step loss out of ``self.log(prog_bar=True)``, which would convert it on every step
    (see ``DistillationModule._log_step_loss``); Lightning's documented way to add items is ``get_metrics``.
    """

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Any]:
        return {**super().get_metrics(trainer, pl_module), **getattr(pl_module, "progress_values", {})}
