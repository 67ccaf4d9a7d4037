"""The in-memory data module all small datasets share: tensors in, normalised once, augmented per batch."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from sklearn.model_selection import train_test_split
from torch.utils.data import BatchSampler, DataLoader, SequentialSampler, TensorDataset

from distill.data.identity import content_identity
from distill.data.sampling import (
    EpochShuffleSampler,
    ResumableLoader,
    TensorBatchSampler,
    epoch_generator,
    global_seed,
)
from distill.errors import ConfigError

# How the recorded preprocessing turns a (decoded, resized, cropped) image's pixel values into the model's input.
PREPROCESSING_FORMULA = "input[c] = (pixels[c] / value_range - mean[c]) / std[c]"


def preprocessing_description(channels: int, input_size: int, value_range: float, mean: Sequence[float],
                              std: Sequence[float], pixels: str, resize: dict[str, Any] | None = None,
                              center_crop: int | None = None) -> dict[str, Any]:
    """How a raw image becomes the model's input, as JSON-ready data (written into every export, so that a model
    can be used without this code): decode, resize, centre-crop, then ``PREPROCESSING_FORMULA`` per channel.

    ``in_graph`` is false here: the caller applies the formula. An ONNX file exported with
    ``compress.onnx.preprocess=true`` records true: its graph applies the formula, so pixel values go in.
    """
    return {
        "layout": "NCHW",
        "dtype": "float32",
        "input_size": [input_size, input_size],
        "channels": channels,
        "channel_order": "RGB" if channels == 3 else "L",
        # PIL's 'L' is ITU-R 601-2 luma (R*299/1000 + G*587/1000 + B*114/1000) of the RGB image.
        "decode": "PIL.Image.open(file).convert('RGB')" + (".convert('L')" if channels == 1 else ""),
        "pixels": pixels,
        "resize": resize,
        "center_crop": [center_crop, center_crop] if center_crop is not None else None,
        "value_range": float(value_range),
        "mean": [float(value) for value in mean],
        "std": [float(value) for value in std],
        "formula": PREPROCESSING_FORMULA,
        "in_graph": False,
    }


@dataclass(frozen=True)
class Split:
    images: torch.Tensor  # float32, N x C x H x W, normalised
    labels: torch.Tensor  # int64, N


def resolve_workers(num_workers: int | str, pin_memory: bool | str) -> tuple[int, bool]:
    """``auto`` from the machine: loader workers for all cores but one (at most 4), pinned memory with CUDA."""
    if num_workers == "auto":
        num_workers = min(4, max(0, (os.cpu_count() or 1) - 1))
    if pin_memory == "auto":
        pin_memory = torch.cuda.is_available()
    return int(num_workers), bool(pin_memory)


def stratified_split(labels: np.ndarray, fraction: float, seed: int, key: str = "data.val_fraction"
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Indices (kept, held_out) with ``fraction`` of every class held out; fixed by ``seed``."""
    indices = np.arange(len(labels))
    classes = len(np.unique(labels))
    held_out = round(fraction * len(labels))
    if held_out < classes or len(labels) - held_out < classes:  # sklearn's own error names neither key nor fix
        raise ConfigError(f"{key}={fraction} holds out {held_out} of {len(labels)} images, but both sides of a "
                          f"stratified split need at least one image of each of the {classes} classes; give a "
                          f"value between {classes / len(labels):.4f} and {1 - classes / len(labels):.4f}")
    kept, held_out_indices = train_test_split(indices, test_size=fraction, stratify=labels, random_state=seed)
    return np.sort(kept), np.sort(held_out_indices)


class BatchedTensorDataset(TensorDataset):
    """``TensorDataset`` that hands the DataLoader whole batches: one indexing op per batch, no per-sample
    ``__getitem__`` and no collation (PyTorch's fetcher calls ``__getitems__`` with the batch's indices)."""

    def __getitems__(self, indices: list[int] | torch.Tensor) -> tuple[torch.Tensor, ...]:
        index = torch.as_tensor(indices)
        return tuple(tensor[index] for tensor in self.tensors)


def keep_batch(batch: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    """The collate function for already-batched data (module level, so it pickles into workers)."""
    return batch


class SplitLoadersMixin:
    """``train/val/test_dataloader`` from the module's one ``_loader(split, shuffle)``."""

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        raise NotImplementedError

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)


class InMemoryDataModule(SplitLoadersMixin, L.LightningDataModule):
    """Holds train/val/test as tensors; subclasses only say how to read the raw arrays.

    Resizing and normalisation happen once in ``setup``; augmentation (random crop with padding,
    horizontal flip) runs on whole batches after they reach the device, so there is no per-sample
    decode or transform in the data path.
    """

    num_classes: int
    in_chans: int
    native_size: int
    # What the raw images' pixel values are (recorded with the preprocessing of every export).
    raw_pixels = "8-bit values 0..255"

    def __init__(
        self,
        batch_size: int = 64,
        eval_batch_size: int = 256,
        num_workers: int | str = 0,
        image_size: int | None = None,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        val_fraction: float = 0.1,
        split_seed: int = 0,
        random_crop_padding: int = 0,
        horizontal_flip: bool = False,
        pin_memory: bool | str = False,
    ) -> None:
        super().__init__()
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.num_workers, self.pin_memory = resolve_workers(num_workers, pin_memory)
        self.image_size = image_size or self.native_size
        self.mean = tuple(mean) if mean is not None else (0.0,) * self.in_chans
        self.std = tuple(std) if std is not None else (1.0,) * self.in_chans
        if len(self.mean) != self.in_chans or len(self.std) != self.in_chans:
            raise ValueError(
                f"{type(self).__name__}: mean/std need {self.in_chans} values (one per channel), "
                f"got mean={list(self.mean)} std={list(self.std)}"
            )
        self.val_fraction = val_fraction
        self.split_seed = split_seed
        self.random_crop_padding = random_crop_padding
        self.horizontal_flip = horizontal_flip
        self.splits: dict[str, Split] = {}

    # --- what subclasses provide -------------------------------------------------------------
    def check(self) -> None:
        """Raise DatasetNotFoundError (with the fix) if the raw files are missing. Cheap: no loading."""

    def load_raw(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Raw arrays: {'train': (images uint8/float N x C x H x W, labels), 'test': (...)}.

        A 'val' entry is optional; without one, a stratified ``val_fraction`` of train is held out.
        """
        raise NotImplementedError

    def source_files(self) -> list[Path]:
        """The files the raw arrays are read from (their bytes are the data's identity)."""
        raise NotImplementedError

    def identity(self) -> str:
        """A digest of the data itself (the files' bytes), so caches never serve another dataset's entries."""
        self.check()
        return content_identity(self.source_files())

    def value_range(self) -> float:
        """The raw images' maximum value (255 for uint8 images), mapped to 1.0 before normalising."""
        return 255.0

    def class_names(self) -> list[str]:
        """The class names in label-index order (the index is the name where the dataset gives no names)."""
        return [str(index) for index in range(self.num_classes)]

    def preprocessing(self) -> dict[str, Any]:
        """What ``_to_split`` does to a raw image, as data (see ``preprocessing_description``): divide by
        ``value_range()``, resize the float pixels when ``image_size`` differs from ``native_size`` (bilinear with
        antialiasing: PIL's BILINEAR resize of a mode 'F' image computes the same), normalise. Scaling before or
        after the resize is the same linear map, so the description resizes the pixel values."""
        resize = None
        if self.image_size != self.native_size:
            resize = {"size": [self.image_size, self.image_size], "interpolation": "bilinear", "antialias": True,
                      "on": "float pixels"}
        return preprocessing_description(self.in_chans, self.image_size, self.value_range(), self.mean, self.std,
                                         self.raw_pixels, resize)

    # --- shared machinery --------------------------------------------------------------------
    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (self.in_chans, self.image_size, self.image_size)

    def prepare_data(self) -> None:
        self.check()

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        raw = self.load_raw()
        if "val" not in raw:
            images, labels = raw["train"]
            kept, held_out = stratified_split(labels, self.val_fraction, self.split_seed)
            raw["train"], raw["val"] = (images[kept], labels[kept]), (images[held_out], labels[held_out])
        self.splits = {name: self._to_split(*arrays) for name, arrays in raw.items()}

    def _to_split(self, images: np.ndarray, labels: np.ndarray) -> Split:
        tensor = torch.from_numpy(np.asarray(images, dtype=np.float32).copy()).div_(self.value_range())
        if tensor.shape[-1] != self.image_size or tensor.shape[-2] != self.image_size:
            tensor = F.interpolate(tensor, size=(self.image_size, self.image_size), mode="bilinear",
                                   align_corners=False, antialias=True)
        mean = torch.tensor(self.mean).view(1, -1, 1, 1)
        std = torch.tensor(self.std).view(1, -1, 1, 1)
        return Split(((tensor - mean) / std).contiguous(), torch.as_tensor(labels).long())

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        data = self.splits[split]
        # The index lets cached teacher outputs be looked up per sample (also under DDP's sampler).
        dataset = BatchedTensorDataset(data.images, data.labels, torch.arange(len(data.labels)))
        options: dict[str, Any] = {"collate_fn": keep_batch, "num_workers": self.num_workers,
                                   "pin_memory": self.pin_memory, "persistent_workers": self.num_workers > 0}
        # Index tensors would reach worker processes through shared memory, slower than lists: workers get lists.
        batcher = TensorBatchSampler if self.num_workers == 0 else BatchSampler
        if shuffle:
            batches = batcher(EpochShuffleSampler(len(dataset)), self.batch_size, drop_last=False)
            return ResumableLoader(dataset, batches_done=self._batches_done, batch_sampler=batches, **options)
        return DataLoader(dataset, batch_sampler=batcher(SequentialSampler(dataset), self.eval_batch_size, False),
                          **options)

    def _batches_done(self) -> tuple[int, int]:
        """(epoch, batches trained in it): what a checkpoint records of the training order."""
        assert self.trainer is not None, "the training loader runs under a trainer"
        loop = self.trainer.fit_loop
        # Lightning declares each progress's ``current`` as a _ReadyCompletedTracker, but these hold its subclass
        # _ProcessedTracker (the default, whose .processed Lightning's own loops read).
        return (loop.epoch_progress.current.processed,  # type: ignore[attr-defined]
                loop.epoch_loop.batch_progress.current.processed)  # type: ignore[attr-defined]

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        """Augmented training batches also carry each image's augmentation variant (for cached teacher outputs)."""
        if self.trainer is not None and self.trainer.training and self.augments:
            images, targets, indices = batch
            draws = self._augmentation_draws(self.trainer.current_epoch, images.device)
            draws = {name: value[indices] for name, value in draws.items()}
            batch = (augment_batch(images, self.random_crop_padding, draws), targets, indices,
                     self.variant_ids(draws))
        return batch

    @property
    def augmentation_variants(self) -> int:
        """How many different images augmentation can make of one training image (crop offsets x flips)."""
        return (2 * self.random_crop_padding + 1) ** 2 * (2 if self.horizontal_flip else 1)

    def variant_ids(self, draws: dict[str, torch.Tensor]) -> torch.Tensor:
        """Each draw's variant number in ``range(augmentation_variants)``: (offset_y, offset_x, flip) in order."""
        span, flips = 2 * self.random_crop_padding + 1, 2 if self.horizontal_flip else 1
        return (draws["offset_y"] * span + draws["offset_x"]) * flips + draws["flip"].long()

    def augment_variant(self, images: torch.Tensor, variant: int) -> torch.Tensor:
        """``images`` as augmentation variant ``variant`` makes them (the inverse of ``variant_ids``)."""
        span, flips = 2 * self.random_crop_padding + 1, 2 if self.horizontal_flip else 1
        offsets, flip = divmod(variant, flips)
        n = len(images)
        draws = {"offset_y": torch.full((n,), offsets // span, device=images.device),
                 "offset_x": torch.full((n,), offsets % span, device=images.device),
                 "flip": torch.full((n,), bool(flip), device=images.device)}
        return augment_batch(images, self.random_crop_padding, draws)

    def _augmentation_draws(self, epoch: int, device: torch.device) -> dict[str, torch.Tensor]:
        """Every training sample's crop offsets and flip for ``epoch``, from (seed, epoch) alone.

        Drawn per sample index rather than from the global RNG, so a resumed run (or any reader that
        knows seed, epoch and index) sees exactly the augmentation the uninterrupted run saw.
        """
        key = (global_seed(), epoch, str(device))
        if getattr(self, "_draws_key", None) != key:
            n = len(self.splits["train"].labels)
            generator = epoch_generator(key[0], epoch, stream=1)
            span = 2 * self.random_crop_padding + 1
            draws = {"offset_y": torch.randint(0, span, (n,), generator=generator),
                     "offset_x": torch.randint(0, span, (n,), generator=generator),
                     "flip": (torch.rand(n, generator=generator) < 0.5) & self.horizontal_flip}
            self._draws = {name: value.to(device) for name, value in draws.items()}
            self._draws_key = key
        return self._draws

    @property
    def train_labels(self) -> torch.Tensor:
        """Every training sample's label, by the index the loader hands to the step (CRD draws negatives here)."""
        return self.splits["train"].labels

    @property
    def augments(self) -> bool:
        """Whether training images change from epoch to epoch (then cached teacher outputs would be stale)."""
        return self.random_crop_padding > 0 or self.horizontal_flip


def augment_batch(images: torch.Tensor, crop_padding: int, draws: dict[str, torch.Tensor]) -> torch.Tensor:
    """Crop after zero padding at each image's ``offset_y``/``offset_x``, then flip where ``flip`` is set."""
    if crop_padding > 0:
        n, _, height, width = images.shape
        padded = F.pad(images, (crop_padding,) * 4)
        rows = (draws["offset_y"].view(n, 1) + torch.arange(height, device=images.device)).view(n, 1, height, 1)
        cols = (draws["offset_x"].view(n, 1) + torch.arange(width, device=images.device)).view(n, 1, 1, width)
        batch_index = torch.arange(n, device=images.device).view(n, 1, 1, 1)
        channel_index = torch.arange(images.shape[1], device=images.device).view(1, -1, 1, 1)
        images = padded[batch_index, channel_index, rows, cols]
    return torch.where(draws["flip"].view(-1, 1, 1, 1), images.flip(-1), images)
