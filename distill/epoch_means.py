"""Epoch means of per-step training values, accumulated on the device: no host sync and no ``self.log`` per step.

Lightning's ``self.log(..., on_epoch=True)`` does the same averaging, but each call costs ~0.3 ms of host
bookkeeping per step, which on a small model is a large share of the step. Here one update per step adds a
whole vector of values (the total loss, every term, the accuracy); the module logs the means once per epoch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

import lightning as L
import torch
from torchmetrics import Metric


class EpochMeans(Metric):
    """Batch-size-weighted means of named values; an update may carry only some of them (``positions``).

    A torchmetrics ``Metric``, so DDP ranks are reduced at ``compute`` and the sums go into checkpoints
    (a run resumed mid-epoch reports the mean over the whole epoch, not only the part after the resume).
    """

    full_state_update = False
    sums: torch.Tensor  # states made by add_state in __init__
    weights: torch.Tensor

    def __init__(self, names: Sequence[str]) -> None:
        super().__init__()
        self.names = list(names)
        self.add_state("sums", torch.zeros(len(self.names)), dist_reduce_fx="sum", persistent=True)
        self.add_state("weights", torch.zeros(len(self.names)), dist_reduce_fx="sum", persistent=True)
        self._positions: dict[tuple[tuple[str, ...], str], torch.Tensor] = {}  # by (names, device)

    def positions(self, names: Sequence[str]) -> torch.Tensor:
        """The index tensor of ``names`` (cached per set of names, so steps do not rebuild it)."""
        key = (tuple(names), str(self.sums.device))
        if key not in self._positions:
            self._positions[key] = torch.tensor([self.names.index(name) for name in names], device=self.sums.device)
        return self._positions[key]

    def update(self, values: torch.Tensor, positions: torch.Tensor, weight: int, steps: int = 1) -> None:
        """Add ``steps`` steps of batch size ``weight`` whose values sum to ``values`` (one step: its values)."""
        values = values.detach().to(self.sums.dtype)
        self.sums.index_add_(0, positions, values, alpha=weight)
        self.weights.index_add_(0, positions, torch.ones_like(values), alpha=weight * steps)

    def compute(self) -> dict[str, torch.Tensor]:
        means = self.sums / self.weights
        return {name: means[i] for i, name in enumerate(self.names)}


class LoggingModule(Protocol):
    """What :func:`log_epoch_means` reads of a LightningModule: its trainer, its epoch and its progress-bar values."""

    progress_values: dict[str, float]

    @property
    def trainer(self) -> L.Trainer: ...

    @property
    def current_epoch(self) -> int: ...


def log_epoch_means(module: LoggingModule, means: EpochMeans, terms: Mapping[str, str]) -> None:
    """Log the epoch's training means, then reset them: ``train/<logged>`` for each ``terms`` entry
    (logged name -> name in ``means``), the total and the accuracy under the names Lightning gives a value
    logged per step and per epoch (``train/loss_epoch``, and ``train/loss`` for monitors only).

    ``self.log`` is bypassed on purpose: each call costs ~0.3 ms of Lightning's result bookkeeping (a walk and
    deep copy of its ``_ResultMetric`` per call, then a reduction and conversion of each value at the epoch's
    end), about 5 % of a small model's epoch for four values. The means become numbers in one transfer and go
    where ``self.log`` would put them: the loggers (through Lightning's own ``_logger_connector.log_metrics``, at
    the step and with the ``epoch`` Lightning gives epoch-end values), ``trainer.callback_metrics``
    (monitors, the run summary; the module hook runs before the monitoring callbacks' epoch end) and the
    progress bar (``module.progress_values``, read by distill.progress.StepValuesProgressBar).
    """
    computed = means.compute()
    names = {"train/loss_epoch": "total", **{f"train/{logged}": name for logged, name in terms.items()},
             "train/acc_top1": "acc_top1"}
    numbers = dict(zip(names, torch.stack([computed[name] for name in names.values()]).tolist(), strict=True))
    means.reset()
    trainer = module.trainer
    # One read of the property (each read gathers Lightning's logged results again); "train/loss" for monitors.
    trainer.callback_metrics.update({name: torch.tensor(value) for name, value in
                                     {**numbers, "train/loss": numbers["train/loss_epoch"]}.items()})
    module.progress_values.update({name: numbers[name] for name in ("train/loss_epoch", "train/acc_top1")})
    # Lightning logs a training epoch's values one step back, at the step of its validation values (fit_loop).
    step = trainer.fit_loop.epoch_loop._batches_that_stepped - 1
    # Lightning types log_metrics' values as tensors, but converts whatever it gets to numbers for the loggers
    # (convert_tensors_to_scalars); these are host floats on purpose, as above.
    trainer._logger_connector.log_metrics({**numbers, "epoch": module.current_epoch},  # type: ignore[dict-item]
                                          step=step)
