"""Lightning data modules: small sets held in memory as tensors, image folders decoded on the fly."""

from distill.data.base import InMemoryDataModule
from distill.data.cifar import CIFAR10DataModule, CIFAR100DataModule
from distill.data.digits import DigitsDataModule
from distill.data.fashion_mnist import FashionMNISTDataModule
from distill.data.image_folder import ImageFolderDataModule
from distill.errors import DatasetNotFoundError

__all__ = [
    "CIFAR10DataModule",
    "CIFAR100DataModule",
    "DatasetNotFoundError",
    "DigitsDataModule",
    "FashionMNISTDataModule",
    "ImageFolderDataModule",
    "InMemoryDataModule",
]
