"""What our architectures share: timm's builder conventions and timm's classifier API."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import torch
from torch import nn

ModelT = TypeVar("ModelT", bound=nn.Module)


def build_registered(model_cls: Callable[..., ModelT], variant: str, pretrained: bool, **kwargs: Any) -> ModelT:
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


def linear_classifier(num_features: int, num_classes: int) -> nn.Module:
    return nn.Linear(num_features, num_classes) if num_classes > 0 else nn.Identity()


class LinearClassifierMixin:
    """timm's classifier API for a model whose head is ``self.fc`` over ``self.num_features`` inputs.

    The model defines ``forward_features`` and ``forward_head``; ``forward`` chains them as timm's do.
    """

    fc: nn.Module
    num_features: int
    num_classes: int
    training: bool  # nn.Module's, for the model this mixes into
    # Defined by the model (forward_head possibly by a mixin below).
    forward_features: Callable[[torch.Tensor], torch.Tensor]
    forward_head: Callable[..., torch.Tensor]

    def get_classifier(self) -> nn.Module:
        return self.fc

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        self.num_classes = num_classes
        self.fc = linear_classifier(self.num_features, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


class PooledLinearHeadMixin(LinearClassifierMixin):
    """Global average pooling, dropout (``self.drop_rate``), then ``self.fc``: the head of our conv nets."""

    drop_rate: float

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = nn.functional.adaptive_avg_pool2d(x, 1).flatten(1)
        x = nn.functional.dropout(x, p=self.drop_rate, training=self.training)
        return x if pre_logits else self.fc(x)
