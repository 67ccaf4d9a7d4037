"""A small plain CNN: three conv-BN-ReLU stages (the last two stride 2), global pooling, a linear head.

Cheap enough to be the student in tests and on microcontroller-class budgets; ``width`` scales every stage and
``depth`` sets the conv-BN-ReLU blocks per stage (the first one strides).
"""

from __future__ import annotations

from typing import Any

import torch
from timm.models import register_model
from torch import nn

from students.common import PooledLinearHeadMixin, build_registered, linear_classifier


def conv_bn_relu(in_channels: int, out_channels: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class SmallCNN(PooledLinearHeadMixin, nn.Module):
    def __init__(
        self, width: int = 16, num_classes: int = 10, in_chans: int = 3, drop_rate: float = 0.0,
        global_pool: str = "avg", depth: int = 1,
    ) -> None:
        super().__init__()
        if depth < 1:
            raise ValueError(f"SmallCNN depth (blocks per stage) must be >= 1, got {depth}")
        channels = (width, 2 * width, 4 * width)
        self.num_classes = num_classes
        self.drop_rate = drop_rate
        self.stages = nn.Sequential(*(
            self._stage(in_channels, out_channels, stride, depth)
            for in_channels, out_channels, stride in zip((in_chans, *channels[:2]), channels, (1, 2, 2))))
        self.num_features = self.head_hidden_size = channels[2]
        self.feature_info = [
            dict(num_chs=c, reduction=r, module=f"stages.{i}") for i, (c, r) in enumerate(zip(channels, (1, 2, 4)))
        ]
        self.fc = linear_classifier(channels[2], num_classes)

    @staticmethod
    def _stage(in_channels: int, out_channels: int, stride: int, depth: int) -> nn.Sequential:
        """One block, or ``depth`` blocks in a Sequential (depth 1 keeps the layout, and so the weights' names, of
        every small_cnn exported before ``depth`` existed)."""
        first = conv_bn_relu(in_channels, out_channels, stride)
        if depth == 1:
            return first
        return nn.Sequential(first, *(conv_bn_relu(out_channels, out_channels, 1) for _ in range(depth - 1)))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(x)


@register_model
def small_cnn(pretrained: bool = False, **kwargs: Any) -> SmallCNN:
    return build_registered(SmallCNN, "small_cnn", pretrained, **kwargs)
