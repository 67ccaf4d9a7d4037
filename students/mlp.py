"""Hinton et al. (2015) MNIST MLPs: two hidden ReLU layers on the flattened image.

The paper's teacher has 1200-1200 units with dropout, its student 800-800 without. ``hidden`` and
``drop_rate`` change the width and the dropout; ``img_size`` fixes the input size the first layer expects.
"""

from __future__ import annotations

from typing import Any

import torch
from timm.models import register_model
from torch import nn

from students.common import LinearClassifierMixin, build_registered, linear_classifier


class HintonMLP(LinearClassifierMixin, nn.Module):
    def __init__(
        self,
        hidden: int = 800,
        drop_rate: float = 0.0,
        num_classes: int = 10,
        in_chans: int = 1,
        img_size: int | tuple[int, int] = 28,
        global_pool: str = "",
    ) -> None:
        super().__init__()
        height, width = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
        self.num_classes = num_classes
        self.input_features = in_chans * height * width
        self.num_features = self.head_hidden_size = hidden
        self.fc1 = nn.Linear(self.input_features, hidden)
        self.act1 = nn.ReLU(inplace=True)
        self.drop1 = nn.Dropout(drop_rate)
        self.fc2 = nn.Linear(hidden, hidden)
        self.act2 = nn.ReLU(inplace=True)
        self.drop2 = nn.Dropout(drop_rate)
        self.fc = linear_classifier(hidden, num_classes)
        self.feature_info = [
            dict(num_chs=hidden, reduction=1, module="act1"),
            dict(num_chs=hidden, reduction=1, module="act2"),
        ]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        if x[0].numel() != self.input_features:
            raise ValueError(
                f"HintonMLP expects {self.input_features} input values per image "
                f"(in_chans x img_size^2), got an input of shape {tuple(x.shape)}; set the model's img_size"
            )
        x = self.drop1(self.act1(self.fc1(x.flatten(1))))
        return self.drop2(self.act2(self.fc2(x)))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return x if pre_logits else self.fc(x)


@register_model
def hinton_mlp_teacher(pretrained: bool = False, **kwargs: Any) -> HintonMLP:
    kwargs = {"hidden": 1200, "drop_rate": 0.5, **kwargs}
    return build_registered(HintonMLP, "hinton_mlp_teacher", pretrained, **kwargs)


@register_model
def hinton_mlp_student(pretrained: bool = False, **kwargs: Any) -> HintonMLP:
    kwargs = {"hidden": 800, "drop_rate": 0.0, **kwargs}
    return build_registered(HintonMLP, "hinton_mlp_student", pretrained, **kwargs)
