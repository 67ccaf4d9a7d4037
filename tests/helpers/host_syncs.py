"""Counts the tensor calls that force a host-device sync on a GPU, inside a window of training steps.

On the CPU nothing waits, but the same calls run: counting them here tells what a GPU step would wait for.
"""

from __future__ import annotations

import traceback
from collections.abc import Iterator
from contextlib import contextmanager

import lightning as L
import torch

# bool()/float()/int() of a tensor and these methods copy a value to the host, so the host waits for the device.
SYNCING = ("item", "cpu", "tolist", "numpy", "__bool__", "__float__", "__int__")


class SyncCounter(L.Callback):
    """Records every syncing call made between the start of step ``first`` and the end of step ``last``."""

    def __init__(self, first: int, last: int) -> None:
        self.first, self.last = first, last
        self.counting = False
        self.calls: list[tuple[str, str]] = []  # (method, the innermost frames that made the call)
        self.steps = 0

    def on_train_batch_start(self, trainer, module, batch, batch_idx: int) -> None:
        if trainer.global_step == self.first:
            self.counting = True

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx: int) -> None:
        if self.counting:
            self.steps += 1
        if trainer.global_step > self.last:
            self.counting = False

    def record(self, method: str) -> None:
        if self.counting:
            frames = traceback.format_stack(limit=16)[:-2]
            self.calls.append((method, "".join(frames)))


@contextmanager
def counting_syncs(counter: SyncCounter) -> Iterator[SyncCounter]:
    """Patch ``torch.Tensor``'s syncing methods so that each call is reported to ``counter``."""
    originals = {name: getattr(torch.Tensor, name) for name in SYNCING}

    def wrap(name: str):
        original = originals[name]

        def patched(self, *args, **kwargs):
            counter.record(name)
            return original(self, *args, **kwargs)

        return patched

    for name in SYNCING:
        setattr(torch.Tensor, name, wrap(name))
    try:
        yield counter
    finally:
        for name, original in originals.items():
            setattr(torch.Tensor, name, original)
