"""Fashion-MNIST (70,000 real 28x28 images) read from its IDX files, or downloaded by torchvision."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from distill.data.base import InMemoryDataModule
from distill.data.registry import register_data_module
from distill.errors import DatasetNotFoundError

IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (optionally gzipped): magic (2 zero bytes, dtype 0x08, ndim), big-endian dims, data."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        data = handle.read()
    if data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise ValueError(f"{path} is not an unsigned-byte IDX file (magic bytes {data[:4].hex()})")
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


@register_data_module("fashion_mnist")
class FashionMNISTDataModule(InMemoryDataModule):
    """IDX files from ``root`` (Debian's ``dataset-fashion-mnist`` puts them in /usr/share/datasets)."""

    num_classes = 10
    in_chans = 1
    native_size = 28

    def __init__(self, root: str = "/usr/share/datasets/fashion-mnist", download: bool = False, **kwargs) -> None:
        super().__init__(**kwargs)
        self.root = Path(root).expanduser()
        self.download = download

    def class_names(self) -> list[str]:
        from torchvision.datasets import FashionMNIST

        return list(FashionMNIST.classes)

    def _find(self, stem: str) -> Path | None:
        for candidate in (self.root / stem, self.root / f"{stem}.gz", self.root / "FashionMNIST" / "raw" / stem):
            if candidate.is_file():
                return candidate
        return None

    def check(self) -> None:
        missing = [stem for files in IDX_FILES.values() for stem in files if self._find(stem) is None]
        if not missing:
            return
        if self.download:
            from torchvision.datasets import FashionMNIST

            FashionMNIST(str(self.root), train=True, download=True)
            FashionMNIST(str(self.root), train=False, download=True)
            return
        raise DatasetNotFoundError(
            f"Fashion-MNIST files not found under data.root={self.root} (missing: {', '.join(missing)}). "
            "Fix: `apt-get install -y dataset-fashion-mnist` (files go to /usr/share/datasets/fashion-mnist), "
            "or point data.root=<folder with the IDX files>, or set data.download=true to fetch them."
        )

    def source_files(self) -> list[Path]:
        found = [self._find(stem) for files in IDX_FILES.values() for stem in files]
        assert all(path is not None for path in found), "check() found or downloaded every file"
        return [path for path in found if path is not None]

    def load_raw(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        self.check()
        raw = {}
        for split, (image_stem, label_stem) in IDX_FILES.items():
            image_path, label_path = self._find(image_stem), self._find(label_stem)
            assert image_path is not None and label_path is not None, "check() found or downloaded every file"
            images = read_idx(image_path)[:, None]  # N x 1 x 28 x 28
            raw[split] = (images, read_idx(label_path).astype(np.int64))
        return raw
