"""A teacher's stored logits, read by sample index (and augmentation variant) during a student's training.

The files are written by ``logits_cache`` (one ``<split>.<array>.npy`` per array, fp16, and ``meta.json``);
this module only reads them, so the training step depends on the format and not on how the cache is built.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import torch

from distill.io import read_json


def top_k_pseudo_logits(values: torch.Tensor, indices: torch.Tensor, rest: torch.Tensor, num_classes: int,
                        temperature: float) -> torch.Tensor:
    """Logits z with ``softmax(z / T)`` = the kept top-k probabilities and the rest spread evenly."""
    spread = (rest.float() / (num_classes - values.shape[1])).clamp_min(1e-12)
    logits = (temperature * spread.log()).unsqueeze(1).repeat(1, num_classes)
    return logits.scatter(1, indices.long(), temperature * values.float().clamp_min(1e-12).log())


class CachedTeacherOutputs:
    """Per-split arrays (memory or memory-mapped) of teacher logits, looked up by sample index."""

    def __init__(self, folder: Path, memory_mapped: bool) -> None:
        self.folder = folder
        self.meta = read_json(folder / "meta.json")
        self.memory_mapped = memory_mapped
        mode: Literal["r"] | None = "r" if memory_mapped else None
        self.arrays = {split: {name: np.load(folder / f"{split}.{name}.npy", mmap_mode=mode)
                               for name in self.meta["arrays"]} for split in self.meta["splits"]}
        # In memory, one copy per device the lookups come from (the GPU then gathers rows itself).
        self._on_device: dict[tuple[str, str], dict[str, torch.Tensor]] = {}

    @property
    def nbytes(self) -> int:
        return sum(self.split_nbytes(split) for split in self.arrays)

    def split_nbytes(self, split: str) -> int:
        return sum(array.nbytes for array in self.arrays[split].values())

    def variants(self, split: str) -> int:
        """Augmentation variants stored per sample of ``split`` (1: one output per sample)."""
        return self.meta.get("variants", {}).get(split, 1)

    def lookup(self, split: str, indices: torch.Tensor, variants: torch.Tensor | None = None) -> torch.Tensor:
        """Teacher logits (float32) for the samples ``indices`` of ``split``, as augmentation ``variants``."""
        if (variants is not None) != (self.variants(split) > 1):
            raise ValueError(f"cached teacher outputs of '{split}' hold {self.variants(split)} augmentation "
                             f"variant(s) per sample, but the batch {'has' if variants is not None else 'has no'} "
                             "variant numbers: the data's augmentation differs from the cache's")
        rows = (indices,) if variants is None else (indices, variants)
        if self.memory_mapped:
            where = tuple(r.detach().cpu().numpy() for r in rows)
            arrays = {name: torch.from_numpy(np.ascontiguousarray(array[where])).to(indices.device)
                      for name, array in self.arrays[split].items()}
        else:
            key = (split, str(indices.device))
            if key not in self._on_device:
                self._on_device[key] = {name: torch.from_numpy(np.asarray(array)).to(indices.device)
                                        for name, array in self.arrays[split].items()}
            arrays = {name: tensor[rows] for name, tensor in self._on_device[key].items()}
        if "logits" in arrays:
            logits = arrays["logits"].float()
        else:
            logits = top_k_pseudo_logits(arrays["values"], arrays["indices"], arrays["rest"],
                                         self.meta["num_classes"], self.meta["temperature"])
        return logits
