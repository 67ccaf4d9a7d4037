"""Lightning data modules: small sets held in memory as tensors, image folders decoded on the fly.

Every module of this package is imported here, so each data module is in the registry (``DATA_MODULES``) by the
name of its preset in conf/data/: a new dataset is its module and its preset.
"""

import importlib
import pkgutil

from distill.data.base import InMemoryDataModule
from distill.data.cifar import CIFAR10DataModule, CIFAR100DataModule
from distill.data.digits import DigitsDataModule
from distill.data.fashion_mnist import FashionMNISTDataModule
from distill.data.image_folder import ImageFolderDataModule
from distill.data.registry import DATA_MODULES
from distill.errors import DatasetNotFoundError

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = [
    "DATA_MODULES",
    "CIFAR10DataModule",
    "CIFAR100DataModule",
    "DatasetNotFoundError",
    "DigitsDataModule",
    "FashionMNISTDataModule",
    "ImageFolderDataModule",
    "InMemoryDataModule",
]
