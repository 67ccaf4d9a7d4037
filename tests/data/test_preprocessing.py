"""The preprocessing each data module records in every export: applied with numpy and PIL alone (distill/predict.py)
to the raw images, it gives the module's own test tensors; the class names come in label-index order."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from distill.data import DigitsDataModule, FashionMNISTDataModule, ImageFolderDataModule
from distill.data.base import InMemoryDataModule
from distill.data.cifar import CIFAR10DataModule
from distill.predict import model_input, read_image

FASHION_ROOT = Path("/usr/share/datasets/fashion-mnist")
# Float tolerance: the module divides before it resizes and normalises in torch; numpy and PIL in another order.
ATOL = 1e-5


def from_raw(images: np.ndarray, preprocessing: dict) -> np.ndarray:
    return np.stack([model_input(image, preprocessing) for image in images])


def assert_json_ready(preprocessing: dict) -> None:
    assert json.loads(json.dumps(preprocessing)) == preprocessing


@pytest.mark.parametrize("image_size", [8, 16])
def test_digits_preprocessing_applied_to_the_raw_images_gives_the_test_tensors(image_size):
    data = DigitsDataModule(image_size=image_size, mean=[0.3053], std=[0.3760])
    data.setup()
    preprocessing = data.preprocessing()
    assert_json_ready(preprocessing)
    assert preprocessing["value_range"] == 16.0 and "0..16" in preprocessing["pixels"]
    assert preprocessing["input_size"] == [image_size, image_size] and preprocessing["channels"] == 1
    assert preprocessing["layout"] == "NCHW" and preprocessing["dtype"] == "float32"
    assert (preprocessing["resize"] is None) == (image_size == 8) and preprocessing["center_crop"] is None
    raw_images, _ = data.load_raw()["test"]
    np.testing.assert_allclose(from_raw(raw_images, preprocessing), data.splits["test"].images.numpy(), atol=ATOL)
    assert data.class_names() == [str(digit) for digit in range(10)]


def test_digits_stored_as_8_bit_png_values_0_to_16_read_back_to_the_test_tensors(tmp_path):
    data = DigitsDataModule(image_size=8, mean=[0.3053], std=[0.3760])
    data.setup()
    raw_images, _ = data.load_raw()["test"]
    inputs = []
    for index, image in enumerate(raw_images[:40]):
        path = tmp_path / f"{index}.png"
        Image.fromarray(image[0].astype(np.uint8)).save(path)  # lossless: the raw values are whole numbers 0..16
        inputs.append(model_input(read_image(path, data.preprocessing()), data.preprocessing()))
    np.testing.assert_allclose(np.stack(inputs), data.splits["test"].images[:40].numpy(), atol=ATOL)


@pytest.mark.skipif(not FASHION_ROOT.is_dir(), reason="Fashion-MNIST absent: apt-get install -y dataset-fashion-mnist")
@pytest.mark.parametrize("image_size", [28, 32])
def test_fashion_mnist_preprocessing_gives_the_test_tensors_and_names_its_classes(image_size):
    data = FashionMNISTDataModule(root=str(FASHION_ROOT), image_size=image_size, mean=[0.2860], std=[0.3530])
    data.setup()
    preprocessing = data.preprocessing()
    assert_json_ready(preprocessing)
    assert preprocessing["value_range"] == 255.0 and preprocessing["mean"] == [0.2860]
    count = 10_000 if image_size == 28 else 500  # the PIL resize per image: a sample is enough
    raw_images, raw_labels = data.load_raw()["test"]
    np.testing.assert_allclose(from_raw(raw_images[:count], preprocessing),
                               data.splits["test"].images[:count].numpy(), atol=ATOL)
    classes = data.class_names()
    assert classes == ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                       "Ankle boot"]
    assert np.array_equal(raw_labels, data.splits["test"].labels.numpy())  # label i is classes[i]


class RandomRGB(InMemoryDataModule):
    """An 8-bit three-channel in-memory set (CIFAR's form) made of noise, so every value matters."""

    num_classes = 3
    in_chans = 3
    native_size = 12

    def load_raw(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        rng = np.random.default_rng(0)
        return {split: (rng.integers(0, 256, (30, 3, 12, 12), dtype=np.uint8), rng.integers(0, 3, 30))
                for split in ("train", "val", "test")}


@pytest.mark.parametrize("image_size", [12, 20, 9])
def test_an_rgb_in_memory_set_like_cifar_is_described_exactly(image_size):
    data = RandomRGB(image_size=image_size, mean=[0.49, 0.48, 0.45], std=[0.25, 0.24, 0.26])
    data.setup()
    preprocessing = data.preprocessing()
    assert preprocessing["channel_order"] == "RGB" and preprocessing["channels"] == 3
    assert preprocessing["mean"] == [0.49, 0.48, 0.45] and preprocessing["std"] == [0.25, 0.24, 0.26]
    raw_images, _ = data.load_raw()["test"]
    np.testing.assert_allclose(from_raw(raw_images, preprocessing), data.splits["test"].images.numpy(), atol=ATOL)
    assert data.class_names() == ["0", "1", "2"]


def test_cifar_names_its_classes_from_the_dataset(tmp_path, monkeypatch):
    (tmp_path / "cifar-10-batches-py").mkdir()
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    data = CIFAR10DataModule(root=str(tmp_path))
    monkeypatch.setattr(data, "_dataset", lambda train: type("Meta", (), {"classes": names})())
    assert data.class_names() == names
    assert data.preprocessing()["value_range"] == 255.0 and data.preprocessing()["channels"] == 3


def make_varied_image_folder(root: Path) -> None:
    """Noise images of several sizes (tall, wide, square, smaller than the input), modes (RGB, L, RGBA, P) and
    formats, in class folders whose creation order is not their sorted order."""
    rng = np.random.default_rng(0)
    sizes = [(37, 29), (29, 41), (50, 50), (13, 17), (64, 23)]  # (width, height)
    modes = ["RGB", "L", "RGBA", "P", "RGB"]
    for split in ("train", "val", "test"):
        for name in ("zebra", "ant", "Bee"):
            folder = root / split / name
            folder.mkdir(parents=True)
            for index, ((width, height), mode) in enumerate(zip(sizes, modes)):
                pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
                image = Image.fromarray(pixels).convert(mode)
                image.save(folder / f"{index}.{'jpg' if index == 4 else 'png'}")


@pytest.mark.parametrize("in_chans", [3, 1])
def test_image_folder_preprocessing_applied_to_the_files_gives_the_test_tensors(tmp_path, in_chans):
    make_varied_image_folder(tmp_path)
    mean, std = ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]) if in_chans == 3 else ([0.45], [0.226])
    data = ImageFolderDataModule(str(tmp_path), image_size=16, in_chans=in_chans, mean=mean, std=std,
                                 num_workers=0, pin_memory=False)
    data.setup()
    preprocessing = data.preprocessing()
    assert_json_ready(preprocessing)
    assert preprocessing["resize"] == {"shorter_side": 18, "interpolation": "bilinear", "antialias": True,
                                       "on": "8-bit image"}
    assert preprocessing["center_crop"] == [16, 16] and preprocessing["value_range"] == 255.0
    assert preprocessing["channel_order"] == ("RGB" if in_chans == 3 else "L")
    tensors = torch.cat([images for images, *_ in data.test_dataloader()]).numpy()
    samples = data.datasets["test"].samples
    described = np.stack([model_input(read_image(Path(path), preprocessing), preprocessing) for path, _ in samples])
    np.testing.assert_allclose(described, tensors, atol=ATOL)
    classes = data.class_names()
    assert classes == ["Bee", "ant", "zebra"]  # sorted folder names: the module's label indices
    assert all(Path(path).parent.name == classes[label] for path, label in samples)
