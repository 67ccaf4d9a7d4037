"""The frozen teacher's logits on the validation images, kept from the first time each image is seen.

The teacher is frozen and evaluation images are not augmented, so its logits on a validation image are the
same every epoch. Running it again at every validation was about a third of an epoch of the strong pair on CPU
(cifar_resnet20 teaching cifar_resnet8: docs/performance.md). The logits are kept by sample index, on the device
they were computed on, up to ``max_values`` numbers.

A kept row is used only for an index seen before. The first time kept rows could be used, the teacher also runs
and the two are compared: evaluation images that change between passes (a data module with random evaluation
transforms) turn the store off, with a warning, instead of giving the teacher's metrics from other images.
"""

from __future__ import annotations

import logging

import torch

log = logging.getLogger("distill")

# 2**25 float32 numbers (128 MiB): 5,000 images of 10 classes take 50,000; ImageNet's 50,000 of 1,000 take more.
MAX_VALUES = 2**25


class EvalTeacherLogits:
    """Teacher logits by sample index: ``lookup`` gives them for a batch seen before, ``add`` keeps a batch's."""

    def __init__(self, max_values: int = MAX_VALUES) -> None:
        self.max_values = max_values
        self.rows: torch.Tensor | None = None  # (capacity > largest index, classes), on the logits' device
        self.seen = torch.zeros(0, dtype=torch.bool)  # on the host: which rows hold logits
        self.verified = False  # kept rows matched a live pass once
        self.off = False

    def lookup(self, indices: torch.Tensor) -> torch.Tensor | None:
        """The kept logits of ``indices``, or None when any of them was not kept (or the store is off)."""
        if self.off or self.rows is None:
            return None
        on_host = indices.cpu()  # one host sync per validation batch, not per training step
        if int(on_host.max()) >= len(self.seen) or not bool(self.seen[on_host].all()):
            return None
        return self.rows[indices]

    def add(self, indices: torch.Tensor, logits: torch.Tensor) -> None:
        """Keep ``logits`` (the teacher's, on this batch) under ``indices``."""
        if self.off:
            return
        on_host = indices.cpu()
        needed, classes = int(on_host.max()) + 1, logits.shape[1]
        if needed * classes > self.max_values:
            log.info("validation teacher logits: %d images x %d classes is more than %d numbers; the teacher runs "
                     "on every validation", needed, classes, self.max_values)
            self.off, self.rows = True, None
            return
        if self.rows is None or len(self.rows) < needed:
            # Twice the rows (within the limit), not just the batch's largest index: a first pass in index order
            # would otherwise copy the whole store once per batch.
            size = max(needed, min(2 * len(self.seen), self.max_values // classes))
            grown = logits.new_zeros(size, classes)
            seen = torch.zeros(size, dtype=torch.bool)
            if self.rows is not None:
                grown[:len(self.rows)] = self.rows
                seen[:len(self.seen)] = self.seen
            self.rows, self.seen = grown, seen
        self.rows[indices] = logits.detach().to(self.rows.dtype)
        self.seen[on_host] = True

    def verify(self, kept: torch.Tensor, live: torch.Tensor) -> bool:
        """Compare kept rows with the teacher's logits on the same images now; False (and the store off) when
        they differ."""
        if torch.allclose(kept.float(), live.detach().float(), rtol=1e-3, atol=1e-3):
            self.verified = True
            return True
        log.warning("the teacher's logits on validation images differ between passes (random evaluation "
                    "transforms?); they are no longer kept, and the teacher runs on every validation")
        self.off, self.rows, self.seen = True, None, torch.zeros(0, dtype=torch.bool)
        return False
