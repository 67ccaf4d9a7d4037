"""The divergence guard's watch: keeps each training step's values on the device, checked on demand.

Asking ``bool(torch.isfinite(loss))`` every step makes the host wait for the device every step (on a GPU
the host can then no longer queue work ahead). Instead each step copies its values (the weighted total, each
term, the train accuracy) into a row of a device buffer: one small copy, no sync. The rows are searched for
the first non-finite step when the host syncs anyway: at the steps Lightning logs, at epoch ends and before
every checkpoint is written, so no checkpoint ever holds a step after the bad one. The same rows feed the
epoch means (``consumer``) in a few ops per check instead of a metric update per step.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

from distill.errors import DivergenceError

# (rows, names, runs): ``rows[start:stop]`` were steps of batch size ``weight`` for each (start, stop, weight).
RowsConsumer = Callable[[torch.Tensor, tuple[str, ...], list[tuple[int, int, int]]], None]


class NonFiniteWatch:
    """The values of each step since the last check; ``check`` names the first step with a NaN or inf."""

    def __init__(self, consumer: RowsConsumer | None = None, capacity: int = 64) -> None:
        self.consumer = consumer
        self.capacity = capacity
        self.rows: torch.Tensor | None = None  # (capacity, values per step), filled up to ``count``
        self.count = 0
        self.consumed = 0  # rows already handed to the consumer
        self.steps: list[int] = []  # the global step of each filled row
        self.weights: list[int] = []  # the batch size of each filled row
        self.names: tuple[str, ...] = ()
        self.epoch = 0

    def update(self, values: torch.Tensor, names: Sequence[str], step: int, epoch: int, weight: int = 1) -> None:
        """``values[i]`` is the value called ``names[i]`` at ``step`` (a batch of ``weight``); no host sync."""
        names = tuple(names)
        if self.rows is None or names != self.names or self.rows.device != values.device:
            # A new set of terms starts with an epoch, after the epoch end's check emptied the rows; a caller
            # that skipped that check pays one sync here rather than losing the rows it has not checked.
            if self.count:
                self.check()
            self.rows = values.new_empty(self.capacity, len(names))
            self.names = names
        elif self.count == len(self.rows):  # no check for a while (no logger, long epoch): grow, still no sync
            self.rows = torch.cat([self.rows, torch.empty_like(self.rows)])
        self.rows[self.count].copy_(values.detach())
        self.count += 1
        self.steps.append(step)
        self.weights.append(weight)
        self.epoch = epoch  # checked at every epoch end, so a bad step is always from the latest epoch

    def consume(self) -> None:
        """Hand the rows the consumer has not seen to it (device ops only, no sync); they stay for ``check``."""
        if self.consumer is None or self.rows is None or self.consumed == self.count:
            return
        runs, start = [], self.consumed
        for index in range(self.consumed + 1, self.count + 1):  # runs of equal batch size: usually one or two
            if index == self.count or self.weights[index] != self.weights[start]:
                runs.append((start, index, self.weights[start]))
                start = index
        self.consumer(self.rows, self.names, runs)
        self.consumed = self.count

    def check(self, read: torch.Tensor | None = None) -> float | None:
        """Raise DivergenceError naming the first bad step and its first non-finite term; else hand the rows to
        the consumer and forget them.

        One host sync; ``read`` (a scalar the caller wants as a number anyway) comes back in the same transfer.
        """
        if not self.count or self.rows is None:
            return None if read is None else float(read)
        rows = self.rows[: self.count]
        bad = ~torch.isfinite(rows).all(dim=1)
        # argmax returns the first of equal maxima: the earliest bad row; -1 when there is none.
        first = torch.where(bad.any(), bad.to(torch.uint8).argmax(), -1).float()  # float32: exact to 2^24 rows
        first_row, *rest = torch.stack([first, *([read.detach().float()] if read is not None else [])]).tolist()
        if first_row >= 0:
            values = rows[int(first_row)].tolist()
            bad_names = [name for name, value in zip(self.names, values, strict=True) if not math.isfinite(value)]
            term = next((name for name in bad_names if name != "total"), "total")
            label = f"term '{term}'" if term != "total" else "the weighted total"
            raise DivergenceError(label, values[self.names.index(term)], self.epoch, self.steps[int(first_row)],
                                  applied=True)
        self.consume()
        self.count = self.consumed = 0
        self.steps.clear()
        self.weights.clear()
        return rest[0] if rest else None
