"""The divergence guard's watch: finds the first non-finite training step on the device, checked on demand.

Asking ``bool(torch.isfinite(loss))`` every step makes the host wait for the device every step (on a GPU
the host can then no longer queue work ahead). With ``guard.on_non_finite=error`` each step only copies its
loss values into a row of a device buffer (one small copy, no sync); the rows are searched for the first bad
step when the host syncs anyway: at the steps Lightning logs, at epoch ends and before every checkpoint is
written, so no checkpoint ever holds a step after the bad one.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from distill.reliability.errors import DivergenceError


class NonFiniteWatch:
    """The loss values of each step since the last check; ``check`` names the first step with a NaN or inf."""

    def __init__(self, capacity: int = 64) -> None:
        self.capacity = capacity
        self.rows: torch.Tensor | None = None  # (capacity, values per step), filled up to ``count``
        self.count = 0
        self.steps: list[int] = []  # the global step of each filled row
        self.names: tuple[str, ...] = ()
        self.epoch = 0

    def update(self, values: torch.Tensor, names: Sequence[str], step: int, epoch: int) -> None:
        """``values[i]`` is the loss value called ``names[i]`` at ``step``; no host sync."""
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
        self.epoch = epoch  # checked at every epoch end, so a bad step is always from the latest epoch

    def check(self, read: torch.Tensor | None = None) -> float | None:
        """Raise DivergenceError naming the first bad step and its first non-finite term, then forget the rows.

        One host sync; ``read`` (a scalar the caller wants as a number anyway) comes back in the same transfer.
        """
        if not self.count:
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
        self.count = 0
        self.steps.clear()
        return rest[0] if rest else None
