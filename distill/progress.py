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
        values = {**super().get_metrics(trainer, pl_module), **getattr(pl_module, "progress_values", {})}
        return short_metrics(values)


# What the bar shows, most useful first, under short names: the whole line fits 100 columns (tqdm's own part
# takes about 60, up to 66 with 4-digit batch counts: "Epoch 14: 100%|██████████| 21/21 [00:00<00:00, 43.74it/s, ").
# Every value is in the logger.
SHOWN = {"val/acc_top1": "val_acc", "train/loss_step": "loss", "train/acc_top1": "train_acc",
         "val/agreement": "agree"}
METRICS_WIDTH = 34


def short_metrics(values: dict[str, Any]) -> dict[str, Any]:
    """The ``SHOWN`` values present, renamed, as many as fit ``METRICS_WIDTH`` characters."""
    shown: dict[str, Any] = {}
    width = 0
    for key, label in SHOWN.items():
        if key not in values:
            continue
        value = f"{values[key]:.3g}" if isinstance(values[key], float) else values[key]
        width += len(f"{label}={value}, ")
        if width > METRICS_WIDTH:
            break
        shown[label] = value
    return shown
