"""CIFAR-10 and CIFAR-100 in torchvision's format, held in memory as tensors."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from distill.data.base import InMemoryDataModule
from distill.data.registry import register_data_module
from distill.errors import DatasetNotFoundError


class _CIFARDataModule(InMemoryDataModule):
    in_chans = 3
    native_size = 32
    dataset_name: str
    folder: str

    def __init__(self, root: str = "~/.cache/distill/data", download: bool = False, **kwargs) -> None:
        super().__init__(**kwargs)
        self.root = Path(root).expanduser()
        self.download = download

    def _dataset(self, train: bool):
        import torchvision.datasets

        cls = getattr(torchvision.datasets, self.dataset_name)
        return cls(str(self.root), train=train, download=self.download)

    def check(self) -> None:
        if self.download or (self.root / self.folder).is_dir():
            return
        raise DatasetNotFoundError(
            f"{self.dataset_name} not found under data.root={self.root} (expected folder {self.folder}). "
            f"Fix: set data.download=true to fetch it, or point data.root=<folder holding {self.folder}>."
        )

    def class_names(self) -> list[str]:
        """The names the dataset's meta file gives, in label order (torchvision reads them)."""
        self.check()
        return list(self._dataset(train=False).classes)

    def source_files(self) -> list[Path]:
        if not (self.root / self.folder).is_dir():  # data.download=true and not fetched yet
            self._dataset(train=True)
        return sorted(path for path in (self.root / self.folder).rglob("*") if path.is_file())

    def load_raw(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        self.check()
        raw = {}
        for split, train in (("train", True), ("test", False)):
            dataset = self._dataset(train)
            raw[split] = (dataset.data.transpose(0, 3, 1, 2), np.asarray(dataset.targets, dtype=np.int64))
        return raw


@register_data_module("cifar10")
class CIFAR10DataModule(_CIFARDataModule):
    num_classes = 10
    dataset_name = "CIFAR10"
    folder = "cifar-10-batches-py"


@register_data_module("cifar100")
class CIFAR100DataModule(_CIFARDataModule):
    num_classes = 100
    dataset_name = "CIFAR100"
    folder = "cifar-100-python"
