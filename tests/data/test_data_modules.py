"""Data modules: fixed stratified splits in memory, IDX reading, batch augmentation, missing-file errors."""

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import BatchSampler, SequentialSampler

from distill.data import DatasetNotFoundError, DigitsDataModule, FashionMNISTDataModule
from distill.data.base import augment_batch
from distill.data.fashion_mnist import read_idx
from distill.data.sampling import EpochShuffleSampler, TensorBatchSampler
from distill.errors import ConfigError
from scripts.bad_inputs.image_folders import make_image_folder

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


def test_batch_augmentation_crops_and_flips_each_image_as_drawn():
    images = torch.arange(2 * 16, dtype=torch.float32).view(2, 1, 4, 4)
    no_shift = {"offset_y": torch.tensor([1, 1]), "offset_x": torch.tensor([1, 1])}
    flipped = augment_batch(images, 1, {**no_shift, "flip": torch.tensor([True, False])})
    assert torch.equal(flipped[0], images[0].flip(-1)) and torch.equal(flipped[1], images[1])
    # Offsets (0, 2) on a 1-pixel zero padding: one row down (a zero row on top), one column left.
    shifted = augment_batch(images, 1, {"offset_y": torch.tensor([0, 1]), "offset_x": torch.tensor([2, 1]),
                                        "flip": torch.tensor([False, False])})
    expected = torch.zeros(4, 4)
    expected[1:, :3] = images[0, 0, :3, 1:]
    assert torch.equal(shifted[0, 0], expected) and torch.equal(shifted[1], images[1])


def test_augmentation_draws_depend_on_seed_epoch_and_index_alone(monkeypatch):
    data = DigitsDataModule(random_crop_padding=2, horizontal_flip=True)
    data.setup()
    monkeypatch.setenv("PL_GLOBAL_SEED", "3")
    first = {k: v.clone() for k, v in data._augmentation_draws(epoch=1, device=torch.device("cpu")).items()}
    data._augmentation_draws(epoch=2, device=torch.device("cpu"))  # another epoch in between changes nothing
    torch.manual_seed(123)  # nor does the global RNG
    again = data._augmentation_draws(epoch=1, device=torch.device("cpu"))
    assert all(torch.equal(first[k], again[k]) for k in first)
    other_epoch = data._augmentation_draws(epoch=2, device=torch.device("cpu"))
    assert not torch.equal(first["offset_y"], other_epoch["offset_y"])
    assert set(first["offset_y"].unique().tolist()) == {0, 1, 2, 3, 4}
    assert 0.4 < first["flip"].float().mean().item() < 0.6


def test_image_folder_reads_class_folders(tmp_path):
    from distill.data import ImageFolderDataModule

    make_image_folder(tmp_path, per_class=3)
    data = ImageFolderDataModule(root=str(tmp_path), image_size=8, batch_size=4, eval_batch_size=6, num_workers=0,
                                 pin_memory=False)
    assert data.num_classes == 2 and data.input_shape == (3, 8, 8)
    data.setup()
    images, labels, indices = next(iter(data.val_dataloader()))
    assert images.shape == (6, 3, 8, 8) and sorted(labels.tolist()) == [0, 0, 0, 1, 1, 1]
    assert indices.tolist() == list(range(6))  # each image's index, for per-sample state (CRD)
    with pytest.raises(DatasetNotFoundError, match="data.root=<folder>"):
        ImageFolderDataModule(root=str(tmp_path / "missing")).check()


@pytest.mark.parametrize("drop_last", [False, True])
def test_tensor_batches_are_the_batches_of_pytorchs_batch_sampler(monkeypatch, drop_last):
    # Same permutation (seed, epoch), same grouping, same resume skip: only the container changes.
    monkeypatch.setenv("PL_GLOBAL_SEED", "7")
    for epoch, resume in [(0, None), (3, None), (2, (2, 64))]:
        expected_sampler, tensor_sampler = EpochShuffleSampler(300), EpochShuffleSampler(300)
        for sampler in (expected_sampler, tensor_sampler):
            sampler.set_epoch(epoch)
            if resume:
                sampler.resume_at(*resume)
        expected = list(BatchSampler(expected_sampler, 32, drop_last))
        batches = list(TensorBatchSampler(tensor_sampler, 32, drop_last))
        assert [batch.tolist() for batch in batches] == expected
        remaining = 300 - (64 if resume else 0)
        assert sum(map(len, expected)) == (remaining // 32 * 32 if drop_last else remaining)
    sequential = list(TensorBatchSampler(SequentialSampler(range(70)), 32, False))
    assert [batch.tolist() for batch in sequential] == list(BatchSampler(SequentialSampler(range(70)), 32, False))


def test_digits_loaders_hand_out_index_tensors_and_the_same_images():
    data = DigitsDataModule(batch_size=100, num_workers=0)
    data.setup()
    data._batches_done = lambda: (0, 0)
    images, labels, indices = next(iter(data.val_dataloader()))
    split, first = data.splits["val"], min(data.eval_batch_size, len(data.splits["val"].labels))
    assert torch.equal(indices, torch.arange(first))
    assert torch.equal(images, split.images[:first]) and torch.equal(labels, split.labels[:first])
    seen = torch.cat([batch[2] for batch in data.train_dataloader()])
    assert sorted(seen.tolist()) == list(range(len(data.splits["train"].labels)))


def image_folder_data(root):
    from distill.data import ImageFolderDataModule

    return ImageFolderDataModule(root=str(root), image_size=8, batch_size=4, eval_batch_size=4, num_workers=0,
                                 pin_memory=False)


def test_every_split_uses_the_training_splits_class_indices(tmp_path):
    make_image_folder(tmp_path, per_class=2)
    for image in (tmp_path / "val" / "cat").iterdir():  # val holds dogs only: torchvision alone would call them 0
        image.unlink()
    (tmp_path / "val" / "cat").rmdir()
    data = image_folder_data(tmp_path)
    data.setup()
    assert data.datasets["train"].class_to_idx == {"cat": 0, "dog": 1}
    assert data.datasets["val"].targets == [1, 1] and data.datasets["val"].classes == ["cat", "dog"]


def flatten_val(root):
    """val/ with its images directly inside, no class folders."""
    for image in list((root / "val").glob("*/*.png")):
        image.rename(root / "val" / f"{image.parent.name}_{image.name}")
    for folder in ("cat", "dog"):
        (root / "val" / folder).rmdir()


@pytest.mark.parametrize(("change", "message"), [
    (lambda root: (root / "val" / "fox").mkdir(), r"val holds class folder\(s\) fox that .*train lacks"),
    (lambda root: (root / "train" / "emu").mkdir(), r"class folder\(s\) .*train/emu hold no readable image"),
    (flatten_val, r"val has no class folders"),
])
def test_class_folders_that_cannot_be_right_are_refused(tmp_path, change, message):
    make_image_folder(tmp_path, per_class=2)
    change(tmp_path)
    with pytest.raises(ConfigError, match=message):
        image_folder_data(tmp_path).setup()


def test_a_single_class_is_refused(tmp_path):
    make_image_folder(tmp_path, per_class=2)
    __import__("shutil").rmtree(tmp_path / "train" / "dog")
    with pytest.raises(ConfigError, match=r"train has a single class folder \(cat\)"):
        image_folder_data(tmp_path).setup()
