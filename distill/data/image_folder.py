"""A folder of images per class (``root/train/<class>/*.jpg``, ``root/val/<class>/*.jpg``, optionally
``root/test/<class>/*.jpg``), decoded per sample.

Validation picks the best checkpoint, so a test split that is the validation split reports an accuracy
chosen on it: ``test/`` is used when it exists, and without it the run says, loudly and in its summary,
that its test figures are validation figures.

For sets too large to hold in memory; small sets belong in an ``InMemoryDataModule``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from distill.data.base import SplitLoadersMixin, preprocessing_description, resolve_workers
from distill.data.folder_scan import SplitScan, class_folders, scan_split
from distill.data.identity import listing_identity
from distill.data.registry import register_data_module
from distill.errors import ConfigError, DatasetNotFoundError

log = logging.getLogger("distill")

# Evaluation resizes the shorter side to this multiple of the input size, then centre-crops (224 from 255).
EVAL_RESIZE_FACTOR = 1.14


def unreadable(path: str) -> str | None:
    """Why PIL cannot open ``path`` (header only), or None when it can."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image.size  # noqa: B018  (the header is parsed by open; size proves it)
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as error:
        return str(error).splitlines()[0][:120] or type(error).__name__
    return None


class BadImage(ConfigError):
    """An image whose header reads but whose pixels cannot be decoded, found when a loader reaches it."""


def decode(path: str) -> Any:
    """The image at ``path``, fully decoded (PIL decodes lazily: ``convert`` forces it)."""
    from PIL import Image

    with open(path, "rb") as handle, Image.open(handle) as image:
        return image.convert("RGB")


class SizedDataset(Protocol):
    """A map-style dataset that knows its length (torch's ``Dataset`` does not declare ``__len__``)."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> Any: ...


class IndexedDataset(Dataset):
    """(image, label, index): the index lets per-sample state (CRD's memory banks) follow each image."""

    def __init__(self, dataset: SizedDataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[Any, int, int]:
        image, label = self.dataset[index]
        return image, label, index


def _to_rgb(image):
    # A named function, not a lambda, so the transform pickles into worker processes.
    return image.convert("RGB")


def class_mapping(train_folder: Path) -> dict[str, int]:
    """Class name -> index, from the training split's class folders (sorted, as torchvision sorts them); every
    split uses it, so a class has one index everywhere."""
    classes = class_folders(train_folder)
    if not classes:
        raise ConfigError(f"{train_folder} has no class folders; expected {train_folder}/<class>/<image> with one "
                          "folder per class")
    if len(classes) == 1:
        raise ConfigError(f"{train_folder} has a single class folder ({classes[0]}); a classifier needs at least two")
    return {name: index for index, name in enumerate(classes)}


def check_split_classes(folder: Path, mapping: dict[str, int], train_folder: Path) -> None:
    """A split may lack classes of the training split, but holds no class the training split lacks."""
    present = class_folders(folder)
    if not present:
        raise ConfigError(f"{folder} has no class folders; expected {folder}/<class>/<image> with the class "
                          f"folders of {train_folder}")
    unknown = [name for name in present if name not in mapping]
    if unknown:
        raise ConfigError(f"{folder} holds class folder(s) {', '.join(unknown)} that {train_folder} lacks; the "
                          f"classes come from the training split ({', '.join(mapping)}): add them there or remove them")


class FolderImages(Dataset):
    """(image, label) for a list of (file, label) samples, decoded with PIL (as torchvision's ImageFolder).

    Headers are checked before training; an image whose pixels then fail to decode (a damaged body, a size
    beyond PIL's decompression-bomb limit) is ``BadImage`` naming the file, or with ``on_bad_image=skip`` is
    replaced by the next image of its split, with a warning naming it (in a loader worker, so it is not
    counted in metrics.json's ``skipped_images``, which lists the files found before training).
    """

    def __init__(self, samples: list[tuple[str, int]], mapping: dict[str, int], transform: Any,
                 on_bad_image: str = "error") -> None:
        self.samples = samples
        self.targets = [label for _, label in samples]
        self.classes, self.class_to_idx = list(mapping), dict(mapping)
        self.transform = transform
        self.on_bad_image = on_bad_image
        self.warned: set[str] = set()

    def keep(self, samples: list[tuple[str, int]]) -> None:
        self.samples, self.targets = samples, [label for _, label in samples]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        from PIL import Image

        for attempt in range(len(self.samples)):
            path, label = self.samples[(index + attempt) % len(self.samples)]
            try:
                return self.transform(decode(path)), label
            except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
                reason = (str(error).splitlines() or [type(error).__name__])[0][:120]
                if self.on_bad_image == "error":
                    raise BadImage(f"{path} cannot be decoded ({reason}) though its header reads; fix: remove or "
                                   "replace it, or set data.on_bad_image=skip to leave such images out") from None
                if path not in self.warned:
                    self.warned.add(path)
                    log.warning("data.on_bad_image=skip: %s cannot be decoded (%s); the next image of the split "
                                "stands in for it", path, reason)
        raise BadImage("no image of the split can be decoded; check the files")


def check_no_empty_class(dataset: Any, folder: Path) -> None:
    """A class folder with no image (or only unreadable ones, left out) is a mistake, not a class to skip."""
    counted = {label for _, label in dataset.samples}
    empty = [name for name in class_folders(folder) if dataset.class_to_idx[name] not in counted]
    if empty:
        raise ConfigError(f"class folder(s) {', '.join(str(folder / name) for name in empty)} hold no readable "
                          "image; add images or remove the folder")


@register_data_module("image_folder")
class ImageFolderDataModule(SplitLoadersMixin, L.LightningDataModule):
    def __init__(
        self,
        root: str,
        train_dir: str = "train",
        val_dir: str = "val",
        test_dir: str | None = None,
        image_size: int = 224,
        in_chans: int = 3,
        mean: Sequence[float] = (0.485, 0.456, 0.406),
        std: Sequence[float] = (0.229, 0.224, 0.225),
        batch_size: int = 64,
        eval_batch_size: int = 128,
        num_workers: int | str = "auto",
        pin_memory: bool | str = "auto",
        horizontal_flip: bool = True,
        on_bad_image: str = "error",
    ) -> None:
        super().__init__()
        self.root = Path(root).expanduser()
        if test_dir is None:  # test/ when it exists; else the val folder, said at setup and in the summary
            test_dir = "test" if (self.root / "test").is_dir() else val_dir
        self.dirs = {"train": train_dir, "val": val_dir, "test": test_dir}
        self.image_size = image_size
        if in_chans not in (1, 3):  # every image is converted to grayscale (1) or RGB (3) when decoded
            raise ConfigError(f"data.in_chans={in_chans}: image folders are read as grayscale (data.in_chans=1) or "
                              "RGB (data.in_chans=3); images with other channel counts are converted to one of them")
        self.in_chans = in_chans
        self.mean, self.std = tuple(mean), tuple(std)
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.num_workers, self.pin_memory = resolve_workers(num_workers, pin_memory)
        self.horizontal_flip = horizontal_flip
        if on_bad_image not in ("error", "skip"):
            raise ConfigError(f"data.on_bad_image={on_bad_image!r}; choose error or skip")
        self.on_bad_image = on_bad_image
        self.datasets: dict = {}
        self._scans: dict[str, SplitScan] = {}
        self.skipped_images: dict[str, list[str]] = {}  # split -> unreadable files left out (on_bad_image=skip)

    @property
    def test_is_validation(self) -> bool:
        """True when the test split is the folder that also picks the best checkpoint."""
        return self.dirs["test"] == self.dirs["val"]

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (self.in_chans, self.image_size, self.image_size)

    @property
    def num_classes(self) -> int:
        self.check()
        return len(class_folders(self.root / self.dirs["train"]))

    def _scan(self, split: str) -> SplitScan:
        """The split's samples, labelled by the training split's classes; listed once per module (the cache key
        and ``setup`` both need them, and a folder's link warnings are said once)."""
        if split not in self._scans:
            self.check()
            train = self.root / self.dirs["train"]
            folder = self.root / self.dirs[split]
            mapping = class_mapping(train)
            check_split_classes(folder, mapping, train)
            self._scans[split] = scan_split(folder, mapping)
        return self._scans[split]

    def identity(self) -> str:
        """A digest of every sample (file, label, size, mtime, inode): cheap (no file is read), and it changes when
        any file is added, removed, replaced, touched or moved to another class."""
        samples = [(split, path, label) for split in sorted(self.dirs) for path, label in self._scan(split).samples]
        return listing_identity(samples, self.root)

    def check(self) -> None:
        missing = [str(self.root / d) for d in sorted(set(self.dirs.values())) if not (self.root / d).is_dir()]
        if missing:
            raise DatasetNotFoundError(
                f"image folder(s) not found: {', '.join(missing)}. Fix: set data.root=<folder> holding "
                f"'{self.dirs['train']}/' and '{self.dirs['val']}/' with one sub-folder of images per class."
            )

    @property
    def eval_resize(self) -> int:
        """The shorter side evaluation resizes to before its centre crop of ``image_size``."""
        return int(self.image_size * EVAL_RESIZE_FACTOR)

    def class_names(self) -> list[str]:
        """The training split's class folders, in label-index order."""
        self.check()
        return list(class_mapping(self.root / self.dirs["train"]))

    def preprocessing(self) -> dict[str, Any]:
        """What the evaluation transform (``_transform(train=False)``) does, as data: decode as RGB (then PIL's
        'L' for one channel), resize the 8-bit image's shorter side (torchvision on a PIL image: PIL's bilinear
        resize, the longer side rounded down), centre-crop, divide by 255 (``ToTensor``), normalise."""
        resize = {"shorter_side": self.eval_resize, "interpolation": "bilinear", "antialias": True,
                  "on": "8-bit image"}
        return preprocessing_description(self.in_chans, self.image_size, 255.0, self.mean, self.std,
                                         "8-bit values 0..255", resize, center_crop=self.image_size)

    def _transform(self, train: bool):
        from torchvision import transforms

        steps = [transforms.Grayscale(1)] if self.in_chans == 1 else [transforms.Lambda(_to_rgb)]
        if train:
            steps.append(transforms.RandomResizedCrop(self.image_size))
            if self.horizontal_flip:
                steps.append(transforms.RandomHorizontalFlip())
        else:
            steps += [transforms.Resize(self.eval_resize), transforms.CenterCrop(self.image_size)]
        steps += [transforms.ToTensor(), transforms.Normalize(self.mean, self.std)]
        return transforms.Compose(steps)

    def prepare_data(self) -> None:
        self.check()

    def setup(self, stage: str | None = None) -> None:
        self.check()
        if self.datasets:
            return
        if self.test_is_validation:
            log.warning("data: the test split is %s, the validation split that also picks the best checkpoint, "
                        "so test top-1 is measured on the data it was chosen on (optimistic). Add %s/ with one "
                        "folder per class (used when present) or set data.test_dir=<folder>",
                        self.root / self.dirs["val"], self.root / "test")
        mapping = class_mapping(self.root / self.dirs["train"])
        for split, folder in self.dirs.items():
            scan = self._scan(split)
            dataset = FolderImages(list(scan.samples), mapping, self._transform(split == "train"), self.on_bad_image)
            self._drop_unreadable(split, dataset)
            check_no_empty_class(dataset, self.root / folder)
            self.datasets[split] = dataset

    def _drop_unreadable(self, split: str, dataset) -> None:
        """Open every file's header before training (cheap: no decoding), so a bad file is found now, not when
        a loader worker reaches it an hour in: an error naming them, or (``on_bad_image=skip``) left out."""
        bad = [(path, reason) for path, _ in dataset.samples if (reason := unreadable(path)) is not None]
        if not bad:
            return
        shown = "; ".join(f"{path}: {reason}" for path, reason in bad[:3])
        if self.on_bad_image == "error":
            raise ConfigError(f"{len(bad)} unreadable image(s) in {self.root / self.dirs[split]} (first: {shown}); "
                              "fix: remove or replace them, or set data.on_bad_image=skip to leave them out")
        bad_paths = {path for path, _ in bad}
        dataset.keep([sample for sample in dataset.samples if sample[0] not in bad_paths])
        self.skipped_images[split] = sorted(bad_paths)
        log.warning("data.on_bad_image=skip: left out %d unreadable image(s) of split '%s' (first: %s)", len(bad),
                    split, shown)

    @property
    def train_labels(self) -> torch.Tensor:
        """Every training image's label, by the index the loader hands to the step (CRD draws negatives here)."""
        return torch.as_tensor(self.datasets["train"].targets)

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        return DataLoader(
            IndexedDataset(self.datasets[split]),
            batch_size=self.batch_size if shuffle else self.eval_batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
        )
