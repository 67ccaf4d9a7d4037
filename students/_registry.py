"""Glue between our model classes and timm's registry (shared by every builder in this package)."""

from __future__ import annotations

from typing import Any

from torch import nn


def build_registered(model_cls: type[nn.Module], variant: str, pretrained: bool, **kwargs: Any) -> nn.Module:
    """Build one of our architectures the way timm's builders do.

    timm passes ``pretrained_cfg``/``pretrained_cfg_overlay`` to every builder; our models have no hub
    weights, so ``pretrained=True`` is an error that says how to load weights instead.
    """
    kwargs.pop("pretrained_cfg", None)
    kwargs.pop("pretrained_cfg_overlay", None)
    kwargs.pop("cache_dir", None)
    if pretrained:
        raise ValueError(
            f"'{variant}' has no pretrained weights on a hub; "
            f"train it here or give a weights file (teacher.weights=/path/to/file.safetensors)"
        )
    return model_cls(**kwargs)
