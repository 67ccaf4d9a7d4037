"""The divergence guard's watch: remembers the first non-finite training step on the device.

Asking ``bool(torch.isfinite(loss))`` every step makes the host wait for the device every step (on a GPU
the host can then no longer queue work ahead). With ``guard.on_non_finite=error`` the watch records the
first bad step with tensor ops only and is asked when the host syncs anyway: at the steps Lightning logs,
at epoch ends and before every checkpoint is written, so no checkpoint ever holds a step after the bad one.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from distill.reliability.errors import DivergenceError


class NonFiniteWatch:
    """First step (and its loss values) at which any value was NaN or infinite; checked on demand."""

    def __init__(self) -> None:
        self.first_step: torch.Tensor | None = None  # -1 until a bad step
        self.values: torch.Tensor | None = None
        self.names: list[str] = []
        self.epoch = 0

    def update(self, values: torch.Tensor, names: Sequence[str], step: int, epoch: int) -> None:
        """``values[i]`` is the loss value called ``names[i]`` at ``step``; no host sync."""
        values = values.detach()
        if self.first_step is None or list(names) != self.names:
            # A new set of terms starts only with an epoch, after the previous epoch's check.
            self.first_step = torch.full((), -1, dtype=torch.long, device=values.device)
            self.values = torch.zeros_like(values)
            self.names = list(names)
        first_bad = ~torch.isfinite(values).all() & (self.first_step < 0)
        self.first_step = torch.where(first_bad, step, self.first_step)
        self.values = torch.where(first_bad, values, self.values)
        self.epoch = epoch  # checked at every epoch end, so a bad step is always from the latest epoch

    def check(self, read: torch.Tensor | None = None) -> float | None:
        """Raise DivergenceError naming the first bad step and its first non-finite term.

        One host sync; ``read`` (a scalar the caller wants as a number anyway) comes back in the same transfer.
        """
        if self.first_step is None:
            return None if read is None else float(read)
        flags = torch.stack([self.first_step.to(self.values.dtype), *([read.detach()] if read is not None else [])])
        first_step, *rest = flags.tolist()
        if first_step >= 0:
            values = self.values.tolist()
            bad = [name for name, value in zip(self.names, values, strict=True) if not math.isfinite(value)]
            term = next((name for name in bad if name != "total"), "total")
            label = f"term '{term}'" if term != "total" else "the weighted total"
            raise DivergenceError(label, values[self.names.index(term)], self.epoch, int(first_step), applied=True)
        return rest[0] if rest else None
