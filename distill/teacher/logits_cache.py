"""Teacher outputs computed once per sample and looked up by index, instead of running the teacher each step.

With train-time augmentation the cache holds the teacher's outputs for every augmentation variant of each
training image (after FKD, Shen & Xing 2022, which stores soft labels per crop): our augmentation is
discrete (pad-and-crop offsets, flip), so an image has ``(2p+1)^2 x 2`` variants, and each step looks up
the variant its images got (drawn from seed, epoch and index, so student and cache agree). Where the cache
cannot apply (teacher features read, data that does not index its samples, too many variants), the run
falls back to the live teacher with a one-line notice. Outputs are stored in fp16 under a key of the
teacher's weights, the data config and the compression settings, so a changed teacher or transform never
reads stale outputs; the key has no seed, so every job of a sweep shares one entry. With ``top_k`` only the
k largest probabilities (at the KD temperature) are kept and the rest of the mass is spread evenly over
the other classes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
import torch.nn.functional as F
from filelock import FileLock
from omegaconf import DictConfig, OmegaConf
from torch import nn

from distill.config import DATA_LOADING_KEYS, to_dict
from distill.data import InMemoryDataModule
from distill.errors import ConfigError
from distill.io import publish_folder, remove_staging, write_json
from distill.losses.base import LossTerm
from distill.reliability.interrupts import terminate_raises
from distill.teacher.stored_logits import CachedTeacherOutputs

log = logging.getLogger(__name__)

FORMAT = 2  # 2: the data's identity joined the key
SPLITS = ("train", "val", "test")


def weights_fingerprint(model: nn.Module) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def teacher_outputs_key(teacher: nn.Module, data_config: dict[str, Any], data_identity: str, top_k: int | None,
                        temperature: float | None, variants: int = 1) -> str:
    """The entry's key: the teacher's weights, the data (its settings and its identity), what is stored."""
    ignored = (*DATA_LOADING_KEYS, "batch_size", "eval_batch_size")  # outputs are stored per image
    data = {k: v for k, v in data_config.items() if k not in ignored}
    recipe = {"format": FORMAT, "teacher": weights_fingerprint(teacher), "data": data, "top_k": top_k,
              "temperature": temperature if top_k else None, "data_identity": data_identity}
    if variants > 1:  # entries without augmentation keep the keys they had before variants existed
        recipe["variants"] = variants
    return hashlib.sha256(json.dumps(recipe, sort_keys=True, default=str).encode()).hexdigest()[:16]


@torch.no_grad()
def teacher_logits(teacher: nn.Module, images: torch.Tensor, batch_size: int = 512,
                   transform: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
    """The teacher's logits for ``images`` (``transform`` applied to each batch on the teacher's device)."""
    teacher.eval()
    device = next(teacher.parameters()).device
    outputs = []
    for i in range(0, len(images), batch_size):
        batch = images[i:i + batch_size].to(device)
        outputs.append(teacher(transform(batch) if transform else batch).float().cpu())
    return torch.cat(outputs)


@dataclass(frozen=True)
class Variants:
    """Augmentation variants of the training images: ``augment(images, v)`` for v in ``range(count)``."""

    count: int
    augment: Callable[[torch.Tensor, int], torch.Tensor]


def _arrays(logits: torch.Tensor, top_k: int | None, temperature: float | None) -> dict[str, np.ndarray]:
    if not top_k:
        return {"logits": logits.half().numpy()}
    assert temperature is not None, "top-k storage keeps probabilities at the KD temperature"
    probabilities = F.softmax(logits / temperature, dim=1)
    values, indices = probabilities.topk(top_k, dim=1)
    index_type = np.int16 if logits.shape[1] < 2**15 else np.int32
    return {"values": values.half().numpy(), "indices": indices.numpy().astype(index_type),
            "rest": (1 - values.sum(1)).clamp_min(0).half().numpy()}


def _write_split(staging: Path, split: str, teacher: nn.Module, images: torch.Tensor, variants: Variants | None,
                 top_k: int | None, temperature: float | None) -> list[str]:
    """Compute one split's arrays into ``staging``; with variants, row i holds sample i's outputs per variant.

    Variant arrays are written through memory maps one variant at a time, so a large set never needs all
    of its outputs in memory at once.
    """
    if variants is None:
        arrays = _arrays(teacher_logits(teacher, images), top_k, temperature)
        for name, array in arrays.items():
            np.save(staging / f"{split}.{name}.npy", array)
        return list(arrays)
    files: dict[str, np.memmap] = {}
    start, reported = time.perf_counter(), time.perf_counter()
    for variant in range(variants.count):
        if time.perf_counter() - reported > 60:  # a large variant build takes many minutes: say where it is
            reported = time.perf_counter()
            per_variant = (reported - start) / variant
            log.info("teacher outputs of '%s': variant %d of %d, about %.0f s left", split, variant, variants.count,
                     per_variant * (variants.count - variant))

        def transform(batch: torch.Tensor, variant: int = variant) -> torch.Tensor:
            return variants.augment(batch, variant)

        logits = teacher_logits(teacher, images, transform=transform)
        for name, array in _arrays(logits, top_k, temperature).items():
            if name not in files:
                files[name] = np.lib.format.open_memmap(staging / f"{split}.{name}.npy", mode="w+",
                                                        dtype=array.dtype,
                                                        shape=(len(images), variants.count, *array.shape[1:]))
            files[name][:, variant] = array
    for array in files.values():
        array.flush()
    return list(files)


def live_teacher_passes(trainer: DictConfig, train_images: int, batch_size: int) -> int:
    """The images a live teacher would see in one run: epochs x batches (after limit_train_batches) x batch."""
    batches = math.ceil(train_images / batch_size)
    epochs = max(1, trainer.get("max_epochs") or 1)
    fast_dev_run = trainer.get("fast_dev_run")
    if fast_dev_run:  # Lightning runs that many batches (True: one), once
        return int(fast_dev_run) * batch_size
    limit = trainer.get("limit_train_batches")
    if isinstance(limit, int) and not isinstance(limit, bool):
        batches = min(batches, limit)
    elif isinstance(limit, float):
        batches = int(batches * limit)
    return epochs * batches * batch_size


def build_cost_text(build_passes: int, live_passes: int, runs: int = 1) -> str:
    """How a build compares with the live teacher of the runs that would share the entry (its key has no seed)."""
    ratio = build_passes / max(1, live_passes)  # limit_train_batches=0 trains nothing: no live passes
    shared = f" x {runs} runs (teacher_cache.runs_sharing)" if runs > 1 else ""
    return (f"a cache build takes {build_passes:,} teacher passes, {ratio:.1f}x the {live_passes:,} of "
            f"this run's live teacher{shared}")


def build_pays(build_passes: int, live_passes: int, runs: int) -> bool:
    """A new entry is built only when it costs no more teacher passes than the runs sharing it would spend live."""
    return build_passes <= live_passes * max(1, runs)


def load_or_compute(root: str | Path, key: str, teacher: nn.Module, splits: dict[str, torch.Tensor],
                    num_classes: int, top_k: int | None, temperature: float | None,
                    memory_mapped: bool, train_variants: Variants | None = None) -> CachedTeacherOutputs:
    """The cached outputs for ``key``, computing and publishing them (atomically, under a lock) if missing.

    ``train_variants``: store the training split's outputs for every augmentation variant. The build runs
    on a GPU when there is one, whatever device the teacher is on now. A build stopped by SIGTERM or Ctrl-C
    removes its staging folder; one killed outright (SIGKILL) leaves it to the next build of the key.
    """
    if top_k is not None and not (0 < top_k < num_classes):
        raise ConfigError(f"teacher_cache.top_k={top_k} must be between 1 and {num_classes - 1} (or null for all)")
    root = Path(root).expanduser() / "teacher_outputs"
    root.mkdir(parents=True, exist_ok=True)
    folder = root / key
    variants = {"train": train_variants.count} if train_variants is not None and "train" in splits else {}
    with FileLock(str(root / f"{key}.lock")):
        cached = _read_entry(folder, splits, memory_mapped, variants)
        if cached is not None:
            log.info("teacher outputs read from the cache %s", folder)
            return cached
        # Holding the lock, any staging folder of this key is left from a build that was killed (SIGKILL or a
        # lost node skip publish_folder's cleanup); a large variant cache would otherwise stay on disk each time.
        remove_staging(folder)
        home = next(teacher.parameters()).device
        build_device = torch.device("cuda") if torch.cuda.is_available() else home
        start = time.perf_counter()

        def fill(staging: Path) -> None:
            for split, images in splits.items():
                names = _write_split(staging, split, teacher, images,
                                     train_variants if split in variants else None, top_k, temperature)
            write_json(staging / "meta.json", {
                "splits": list(splits), "arrays": names, "num_classes": num_classes, "top_k": top_k,
                "temperature": temperature, "variants": variants,
                "samples": {split: len(images) for split, images in splits.items()}})

        with terminate_raises():  # SIGTERM (a scheduler's stop, `timeout`) still runs the cleanup
            try:
                teacher.to(build_device)
                publish_folder(folder, fill)
            finally:
                teacher.to(home)
        views = sum(len(images) * variants.get(split, 1) for split, images in splits.items())
        log.info("teacher outputs computed once for %d images (%s) on %s in %.1f s and cached in %s", views,
                 ", ".join(f"{split}: {len(images)} x {variants.get(split, 1)} variant(s)"
                           for split, images in splits.items()), build_device, time.perf_counter() - start, folder)
    return CachedTeacherOutputs(folder, memory_mapped)


def entry_exists(cache_dir: str | Path, key: str) -> bool:
    """Whether the cache holds a published entry for ``key`` (it may still be found damaged when read)."""
    return (Path(cache_dir).expanduser() / "teacher_outputs" / key / "meta.json").is_file()


def _read_entry(folder: Path, splits: dict[str, torch.Tensor], memory_mapped: bool,
                variants: dict[str, int]) -> CachedTeacherOutputs | None:
    """The cache entry when it is complete and readable; a damaged one is removed (and logged) to be rebuilt."""
    if not (folder / "meta.json").is_file():
        return None
    try:
        outputs = CachedTeacherOutputs(folder, memory_mapped)
        for split, images in splits.items():
            rows = {name: len(array) for name, array in outputs.arrays[split].items()}
            if set(rows.values()) != {len(images)}:
                raise ValueError(f"split '{split}' has {rows} rows for {len(images)} samples")
            if outputs.variants(split) != variants.get(split, 1):
                raise ValueError(f"split '{split}' has {outputs.variants(split)} variants per sample, "
                                 f"expected {variants.get(split, 1)}")
        return outputs
    except (OSError, ValueError, KeyError, EOFError) as error:  # json and numpy raise ValueError subclasses
        log.warning("teacher-output cache entry %s is damaged (%s); computing it again", folder,
                    str(error).splitlines()[0][:200])
        shutil.rmtree(folder, ignore_errors=True)
        return None


def live_teacher_reason(settings: DictConfig, loss_terms: nn.ModuleDict,
                        datamodule: Any) -> tuple[str | None, Variants | None]:
    """Why the teacher must run live (None when the cache applies), and the augmentation variants to cache.
    Needs only the datamodule's settings, not its data, so a planner can ask before anything is loaded."""
    if not settings.enabled:
        return "teacher_cache.enabled=false", None
    feature_terms = [name for name, term in loss_terms.items() if term.teacher_layers]
    if not isinstance(datamodule, InMemoryDataModule):
        return (f"{type(datamodule).__name__} has no discrete augmentation variants to cache (its random "
                "resized crops take continuous coordinates)"), None
    if feature_terms:
        return f"loss term(s) {feature_terms} read teacher features", None
    if not datamodule.augments:
        return None, None
    count = datamodule.augmentation_variants
    augmentation = (f"random_crop_padding={datamodule.random_crop_padding}, "
                    f"horizontal_flip={datamodule.horizontal_flip}")
    if not settings.augmentations:
        return f"train-time augmentation ({augmentation}) is on and teacher_cache.augmentations=false", None
    if count > settings.max_variants:
        return (f"train-time augmentation ({augmentation}) makes {count} variants of each image, more than "
                f"teacher_cache.max_variants={settings.max_variants}"), None
    return None, Variants(count, datamodule.augment_variant)


def softmax_temperature(loss_terms: nn.ModuleDict) -> float | None:
    """The temperature of the first term that softens class probabilities at a fixed one (KD's ``T``; not CRD's
    contrast temperature, nor CTKD's learned one): top-k storage keeps probabilities at it."""
    temperatures = (cast(LossTerm, term).softmax_temperature for term in loss_terms.values())
    return next((temperature for temperature in temperatures if temperature is not None), None)


def cached_teacher_outputs(cfg: DictConfig, teacher: nn.Module, datamodule: Any,
                           loss_terms: nn.ModuleDict) -> CachedTeacherOutputs | None:
    """Teacher logits from the output cache when they cannot go stale; None (with the reason logged) otherwise.

    ``loss_terms``: the run's terms, built once by its plan (distill/plan.py).
    """
    settings = cfg.teacher_cache
    if not settings.enabled:
        return None
    reason, variants = live_teacher_reason(settings, loss_terms, datamodule)
    if reason:
        log.info("teacher_cache: %s, so the teacher runs live", reason)
        return None
    temperature = softmax_temperature(loss_terms)
    if settings.top_k and temperature is None:
        raise ConfigError("teacher_cache.top_k keeps probabilities at the KD temperature, but no loss term has one")
    datamodule.setup("fit")
    key = teacher_outputs_key(teacher, to_dict(cfg.data), datamodule.identity(), settings.top_k, temperature,
                              variants.count if variants else 1)
    splits = {name: split.images for name, split in datamodule.splits.items()}
    if not entry_exists(cfg.paths.cache_dir, key):
        build = (variants.count if variants else 1) * len(splits["train"])
        live = live_teacher_passes(cfg.trainer, len(splits["train"]), datamodule.batch_size)
        runs = OmegaConf.select(settings, "runs_sharing", default=1)
        cost = build_cost_text(build, live, runs)
        forced = variants is not None and settings.augmentations is True
        if not forced and not build_pays(build, live, runs):
            log.info("teacher_cache: the teacher runs live: %s, so this run is cheaper without it (a sweep of N runs "
                     "that share it: teacher_cache.runs_sharing=N; to build it anyway: "
                     "teacher_cache.augmentations=true)", cost)
            return None
        log.info("teacher_cache: building it: %s%s", cost, " (teacher_cache.augmentations=true)" if forced
                 else "; it pays within the runs that share it")
    outputs = load_or_compute(cfg.paths.cache_dir, key, teacher, splits, datamodule.num_classes, settings.top_k,
                              temperature, settings.memory_mapped, train_variants=variants)
    per_image = outputs.split_nbytes("train") / len(splits["train"])
    log.info("teacher_cache: %.1f MiB of teacher outputs (%s); %.0f bytes per training image (%d augmentation "
             "variant(s))", outputs.nbytes / 2**20, "memory-mapped" if settings.memory_mapped else "in memory",
             per_image, outputs.variants("train"))
    return outputs
