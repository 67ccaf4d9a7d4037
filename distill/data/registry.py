"""Data modules by the name of their preset in conf/data/: what error messages and checks list, never by hand."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

DATA_MODULES: dict[str, type] = {}


def register_data_module(name: str) -> Callable[[type], type]:
    """Class decorator: ``@register_data_module("digits")`` for the module conf/data/digits.yaml instantiates."""

    def decorator(cls: type) -> type:
        if name in DATA_MODULES:
            raise ValueError(f"data module '{name}' is registered twice ({DATA_MODULES[name].__name__} and "
                             f"{cls.__name__})")
        DATA_MODULES[name] = cls
        return cls

    return decorator


def with_sample_labels() -> list[str]:
    """The data modules that hand each training sample's index to the step and list every label (``train_labels``),
    which terms with per-sample state (CRD's memory banks) need."""
    return [name for name, cls in DATA_MODULES.items() if has_sample_labels(cls)]


def has_sample_labels(module: Any) -> bool:
    cls = module if isinstance(module, type) else type(module)
    return getattr(cls, "train_labels", None) is not None
