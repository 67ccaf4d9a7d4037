"""Per-batch seeding: every random draw of a training batch depends on (seed, epoch, batch) alone.

A resumed run cannot replay the global RNG stream of the run it continues (loader iterators, validation
and the checkpoint load itself draw from it at other moments). Re-seeding at the start of each batch
makes dropout and any other draw of batch ``k`` of epoch ``e`` the same in both; the data order and augmentation are
keyed to (seed, epoch, index) by the data module (distill/data/sampling.py).
"""

from __future__ import annotations

import random
from typing import Any

import lightning as L
import numpy as np
import torch

from distill.data.sampling import global_seed


def step_seed(seed: int, epoch: int, batch_idx: int) -> int:
    return (seed * 2_654_435_761 + epoch * 1_000_003 + batch_idx * 40_503 + 1) % 2**32


class StepSeeder(L.Callback):
    """Seeds python, numpy and torch (all devices) from the fit's seed and the global step, before each batch."""

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        # (epoch, batch) rather than the optimizer step: with gradient accumulation several batches share one.
        seed = step_seed(global_seed(), trainer.current_epoch, batch_idx)
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)  # also seeds every CUDA device
