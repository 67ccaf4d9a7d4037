"""Teacher outputs computed once per sample and looked up by index, instead of running the teacher each step.

Valid only when the teacher sees the same input for a sample every epoch (no random train-time
augmentation): ``cache_reason_not`` says when that is not so, and the run falls back to the live teacher
with a one-line notice. Outputs are stored in fp16 under a key of the teacher's weights, the data config
and the compression settings, so a changed teacher or transform never reads stale outputs. With
``top_k`` only the k largest probabilities (at the KD temperature) are kept and the rest of the mass is
spread evenly over the other classes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from filelock import FileLock
from omegaconf import DictConfig
from torch import nn

from distill.config import to_dict
from distill.data import InMemoryDataModule
from distill.errors import ConfigError
from distill.io import read_json, write_json
from distill.losses import build_loss_terms

log = logging.getLogger(__name__)

FORMAT = 1
SPLITS = ("train", "val", "test")


def weights_fingerprint(model: nn.Module) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def teacher_outputs_key(teacher: nn.Module, data_config: dict[str, Any], top_k: int | None,
                        temperature: float | None) -> str:
    ignored = ("num_workers", "pin_memory", "batch_size", "eval_batch_size", "root", "download")
    data = {k: v for k, v in data_config.items() if k not in ignored}
    recipe = {"format": FORMAT, "teacher": weights_fingerprint(teacher), "data": data, "top_k": top_k,
              "temperature": temperature if top_k else None}
    return hashlib.sha256(json.dumps(recipe, sort_keys=True, default=str).encode()).hexdigest()[:16]


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
        mode = "r" if memory_mapped else None
        self.arrays = {split: {name: np.load(folder / f"{split}.{name}.npy", mmap_mode=mode)
                               for name in self.meta["arrays"]} for split in self.meta["splits"]}
        # In memory, one copy per device the lookups come from (the GPU then gathers rows itself).
        self._on_device: dict[tuple[str, str], dict[str, torch.Tensor]] = {}

    @property
    def nbytes(self) -> int:
        return sum(array.nbytes for split in self.arrays.values() for array in split.values())

    def lookup(self, split: str, indices: torch.Tensor) -> torch.Tensor:
        """Teacher logits (float32) for the samples ``indices`` of ``split``."""
        if self.memory_mapped:
            rows = indices.detach().cpu().numpy()
            arrays = {name: torch.from_numpy(np.ascontiguousarray(array[rows])).to(indices.device)
                      for name, array in self.arrays[split].items()}
        else:
            key = (split, str(indices.device))
            if key not in self._on_device:
                self._on_device[key] = {name: torch.from_numpy(np.asarray(array)).to(indices.device)
                                        for name, array in self.arrays[split].items()}
            arrays = {name: tensor[indices] for name, tensor in self._on_device[key].items()}
        if "logits" in arrays:
            logits = arrays["logits"].float()
        else:
            logits = top_k_pseudo_logits(arrays["values"], arrays["indices"], arrays["rest"],
                                         self.meta["num_classes"], self.meta["temperature"])
        return logits


@torch.no_grad()
def teacher_logits(teacher: nn.Module, images: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    teacher.eval()
    device = next(teacher.parameters()).device
    return torch.cat([teacher(images[i:i + batch_size].to(device)).float().cpu()
                      for i in range(0, len(images), batch_size)])


def _arrays(logits: torch.Tensor, top_k: int | None, temperature: float | None) -> dict[str, np.ndarray]:
    if not top_k:
        return {"logits": logits.half().numpy()}
    probabilities = F.softmax(logits / temperature, dim=1)
    values, indices = probabilities.topk(top_k, dim=1)
    index_type = np.int16 if logits.shape[1] < 2**15 else np.int32
    return {"values": values.half().numpy(), "indices": indices.numpy().astype(index_type),
            "rest": (1 - values.sum(1)).clamp_min(0).half().numpy()}


def load_or_compute(root: str | Path, key: str, teacher: nn.Module, splits: dict[str, torch.Tensor],
                    num_classes: int, top_k: int | None, temperature: float | None,
                    memory_mapped: bool) -> CachedTeacherOutputs:
    """The cached outputs for ``key``, computing and publishing them (atomically, under a lock) if missing."""
    if top_k is not None and not (0 < top_k < num_classes):
        raise ConfigError(f"teacher_cache.top_k={top_k} must be between 1 and {num_classes - 1} (or null for all)")
    root = Path(root).expanduser() / "teacher_outputs"
    root.mkdir(parents=True, exist_ok=True)
    folder = root / key
    with FileLock(str(root / f"{key}.lock")):
        cached = _read_entry(folder, splits, memory_mapped)
        if cached is not None:
            log.info("teacher outputs read from the cache %s", folder)
            return cached
        staging = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=root))
        try:
            arrays = {}
            for split, images in splits.items():
                arrays[split] = _arrays(teacher_logits(teacher, images), top_k, temperature)
                for name, array in arrays[split].items():
                    np.save(staging / f"{split}.{name}.npy", array)
            write_json(staging / "meta.json", {
                "splits": list(splits), "arrays": list(next(iter(arrays.values()))), "num_classes": num_classes,
                "top_k": top_k, "temperature": temperature,
                "samples": {split: len(images) for split, images in splits.items()}})
            os.replace(staging, folder)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        log.info("teacher outputs computed once for %s samples and cached in %s",
                 sum(len(images) for images in splits.values()), folder)
    return CachedTeacherOutputs(folder, memory_mapped)


def _read_entry(folder: Path, splits: dict[str, torch.Tensor], memory_mapped: bool) -> CachedTeacherOutputs | None:
    """The cache entry when it is complete and readable; a damaged one is removed (and logged) to be rebuilt."""
    if not (folder / "meta.json").is_file():
        return None
    try:
        outputs = CachedTeacherOutputs(folder, memory_mapped)
        for split, images in splits.items():
            rows = {name: len(array) for name, array in outputs.arrays[split].items()}
            if set(rows.values()) != {len(images)}:
                raise ValueError(f"split '{split}' has {rows} rows for {len(images)} samples")
        return outputs
    except (OSError, ValueError, KeyError, EOFError) as error:  # json and numpy raise ValueError subclasses
        log.warning("teacher-output cache entry %s is damaged (%s); computing it again", folder,
                    str(error).splitlines()[0][:200])
        shutil.rmtree(folder, ignore_errors=True)
        return None


def cached_teacher_outputs(cfg: DictConfig, teacher: nn.Module, datamodule: Any) -> CachedTeacherOutputs | None:
    """Teacher logits from the output cache when they cannot go stale; None (with the reason logged) otherwise."""
    settings = cfg.teacher_cache
    if not settings.enabled:
        return None
    loss_terms = build_loss_terms(to_dict(cfg.loss))
    feature_terms = [name for name, term in loss_terms.items() if term.teacher_layers]
    reason = None
    if not isinstance(datamodule, InMemoryDataModule):
        reason = f"{type(datamodule).__name__} does not index its samples"
    elif datamodule.augments:
        reason = (f"train-time augmentation (random_crop_padding={datamodule.random_crop_padding}, "
                  f"horizontal_flip={datamodule.horizontal_flip}) changes the teacher's input every epoch")
    elif feature_terms:
        reason = f"loss term(s) {feature_terms} read teacher features"
    if reason:
        log.info("teacher_cache: %s, so the teacher runs live", reason)
        return None
    temperature = next((term.temperature for term in loss_terms.values() if hasattr(term, "temperature")), None)
    if settings.top_k and temperature is None:
        raise ConfigError("teacher_cache.top_k keeps probabilities at the KD temperature, but no loss term has one")
    datamodule.setup("fit")
    key = teacher_outputs_key(teacher, to_dict(cfg.data), settings.top_k, temperature)
    splits = {name: split.images for name, split in datamodule.splits.items()}
    outputs = load_or_compute(cfg.paths.cache_dir, key, teacher, splits, datamodule.num_classes, settings.top_k,
                              temperature, settings.memory_mapped)
    log.info("teacher_cache: %.1f MiB of teacher outputs (%s)", outputs.nbytes / 2**20,
             "memory-mapped" if settings.memory_mapped else "in memory")
    return outputs
