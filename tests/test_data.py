"""Data modules: fixed stratified splits in memory, IDX reading, batch augmentation, missing-file errors."""

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch

from distill.data import DatasetNotFoundError, DigitsDataModule, FashionMNISTDataModule
from distill.data.base import augment_batch
from distill.data.fashion_mnist import read_idx

FASHION_ROOT = Path("/usr/share/datasets/fashion-mnist")


def test_digits_split_is_fixed_stratified_and_normalised():
    data = DigitsDataModule(image_size=8, mean=[0.3053], std=[0.3760])
    data.setup()
    sizes = {name: len(split.labels) for name, split in data.splits.items()}
    assert sizes == {"train": 1293, "val": 144, "test": 360}
    assert sum(sizes.values()) == 1797
    for split in data.splits.values():
        assert torch.bincount(split.labels, minlength=10).min() > 0
    train = data.splits["train"].images
    assert train.shape[1:] == (1, 8, 8)
    assert abs(train.mean().item()) < 0.05 and abs(train.std().item() - 1) < 0.05
    again = DigitsDataModule(image_size=8, mean=[0.3053], std=[0.3760])
    again.setup()
    assert torch.equal(again.splits["test"].labels, data.splits["test"].labels)


def test_digits_resize_to_model_size():
    data = DigitsDataModule(image_size=16)
    data.setup()
    assert data.splits["val"].images.shape[1:] == (1, 16, 16)
    assert data.input_shape == (1, 16, 16)


def test_read_idx_round_trip(tmp_path):
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    header = bytes([0, 0, 0x08, 3]) + b"".join(d.to_bytes(4, "big") for d in images.shape)
    path = tmp_path / "x-idx3-ubyte.gz"
    with gzip.open(path, "wb") as handle:
        handle.write(header + images.tobytes())
    assert np.array_equal(read_idx(path), images)


def test_missing_fashion_mnist_names_the_package_and_the_flag(tmp_path):
    data = FashionMNISTDataModule(root=str(tmp_path / "nowhere"))
    with pytest.raises(DatasetNotFoundError, match=r"apt-get install -y dataset-fashion-mnist.*data.download=true"):
        data.check()


@pytest.mark.skipif(not FASHION_ROOT.is_dir(), reason="dataset-fashion-mnist is not installed")
def test_fashion_mnist_reads_the_debian_files():
    data = FashionMNISTDataModule(root=str(FASHION_ROOT), mean=[0.2860], std=[0.3530], val_fraction=5000 / 60000)
    data.setup()
    assert {k: len(v.labels) for k, v in data.splits.items()} == {"train": 55000, "val": 5000, "test": 10000}
    assert data.splits["test"].images.shape[1:] == (1, 28, 28)


def test_batch_augmentation_crops_and_flips_per_image():
    torch.manual_seed(0)
    images = torch.arange(2 * 16, dtype=torch.float32).view(2, 1, 4, 4).repeat(64, 1, 1, 1)
    flipped = augment_batch(images, crop_padding=0, horizontal_flip=True)
    is_flipped = [torch.equal(f, i.flip(-1)) for f, i in zip(flipped, images)]
    assert 0 < sum(is_flipped) < len(images)
    assert all(f or torch.equal(a, b) for f, a, b in zip(is_flipped, flipped, images))
    cropped = augment_batch(images, crop_padding=1, horizontal_flip=False)
    assert cropped.shape == images.shape
    assert not torch.equal(cropped, images)
    # Every crop is a shifted window of the zero-padded image: values come from the image or the padding.
    assert set(cropped.unique().tolist()) <= set(images.unique().tolist()) | {0.0}


def test_image_folder_reads_class_folders(tmp_path):
    from PIL import Image

    from distill.data import ImageFolderDataModule

    for split in ("train", "val"):
        for label, color in (("cat", 40), ("dog", 200)):
            folder = tmp_path / split / label
            folder.mkdir(parents=True)
            for i in range(3):
                Image.new("RGB", (12, 10), (color, i * 10, 0)).save(folder / f"{i}.png")
    data = ImageFolderDataModule(root=str(tmp_path), image_size=8, batch_size=4, eval_batch_size=6, num_workers=0,
                                 pin_memory=False)
    assert data.num_classes == 2 and data.input_shape == (3, 8, 8)
    data.setup()
    images, labels = next(iter(data.val_dataloader()))
    assert images.shape == (6, 3, 8, 8) and sorted(labels.tolist()) == [0, 0, 0, 1, 1, 1]
    with pytest.raises(DatasetNotFoundError, match="data.root=<folder>"):
        ImageFolderDataModule(root=str(tmp_path / "missing")).check()
