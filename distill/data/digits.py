"""scikit-learn's embedded handwritten digits (1,797 real 8x8 images): offline, tiny, the default set."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from sklearn.datasets import load_digits

from distill.data.base import InMemoryDataModule, stratified_split
from distill.data.registry import register_data_module


@register_data_module("digits")
class DigitsDataModule(InMemoryDataModule):
    """Fixed stratified train/val/test split of ``sklearn.datasets.load_digits`` (pixel values 0..16)."""

    num_classes = 10
    in_chans = 1
    native_size = 8
    raw_pixels = ("integer values 0..16 (each counts the set pixels of a 4x4 block of a 32x32 bitmap); an image "
                  "file holds them as 8-bit values 0..16")

    def __init__(self, test_fraction: float = 0.2, **kwargs) -> None:
        super().__init__(**kwargs)
        self.test_fraction = test_fraction

    def source_files(self) -> list[Path]:
        import sklearn.datasets

        return [Path(sklearn.datasets.__file__).parent / "data" / "digits.csv.gz"]

    def value_range(self) -> float:
        return 16.0

    def load_raw(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        digits = load_digits()
        images = digits.images.astype(np.float32)[:, None]  # N x 1 x 8 x 8
        labels = digits.target
        train, test = stratified_split(labels, self.test_fraction, self.split_seed, key="data.test_fraction")
        return {"train": (images[train], labels[train]), "test": (images[test], labels[test])}
