"""CIFAR-style ResNets as used in the CRD/RepDistiller benchmark (resnet8x4, resnet32x4, resnet20, ...).

Three stages of BasicBlocks after a 3x3 stem, depth = 6n + 2, global average pooling, linear classifier.
Input channels and resolution are free, so the same models serve digits, Fashion-MNIST and CIFAR.
"""

from __future__ import annotations

from typing import Any

import torch
from timm.models import register_model
from torch import nn

from students.common import PooledLinearHeadMixin, build_registered, linear_classifier


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_channels: int, channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample: nn.Module = nn.Identity()
        if stride != 1 or in_channels != channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, channels, 1, stride=stride, bias=False), nn.BatchNorm2d(channels)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.downsample(x))


class CifarResNet(PooledLinearHeadMixin, nn.Module):
    """ResNet for small images: stem + three stages (strides 1, 2, 2) of ``(depth - 2) // 6`` blocks."""

    # The stages, registered in __init__ under these names.
    layer1: nn.Sequential
    layer2: nn.Sequential
    layer3: nn.Sequential

    def __init__(
        self,
        depth: int = 20,
        widths: tuple[int, int, int, int] = (16, 16, 32, 64),
        num_classes: int = 10,
        in_chans: int = 3,
        drop_rate: float = 0.0,
        global_pool: str = "avg",
    ) -> None:
        super().__init__()
        if (depth - 2) % 6 != 0:
            raise ValueError(f"CifarResNet depth must be 6n+2 (8, 14, 20, 32, 56, 110), got {depth}")
        if global_pool != "avg":
            raise ValueError(f"CifarResNet supports global_pool='avg' only, got {global_pool!r}")
        blocks_per_stage = (depth - 2) // 6
        self.num_classes = num_classes
        self.drop_rate = drop_rate
        self.conv1 = nn.Conv2d(in_chans, widths[0], 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        stages = []
        in_channels = widths[0]
        for index, (channels, stride) in enumerate(zip(widths[1:], (1, 2, 2))):
            blocks = [BasicBlock(in_channels if i == 0 else channels, channels, stride if i == 0 else 1)
                      for i in range(blocks_per_stage)]
            stages.append(nn.Sequential(*blocks))
            setattr(self, f"layer{index + 1}", stages[-1])
            in_channels = channels
        self.num_features = self.head_hidden_size = in_channels
        self.feature_info = [
            dict(num_chs=widths[0], reduction=1, module="relu"),
            dict(num_chs=widths[1], reduction=1, module="layer1"),
            dict(num_chs=widths[2], reduction=2, module="layer2"),
            dict(num_chs=widths[3], reduction=4, module="layer3"),
        ]
        self.fc = linear_classifier(in_channels, num_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        return self.layer3(self.layer2(self.layer1(x)))


def _create(variant: str, depth: int, widths: tuple[int, int, int, int], pretrained: bool, **kwargs: Any):
    return build_registered(CifarResNet, variant, pretrained, depth=depth, widths=widths, **kwargs)


@register_model
def cifar_resnet(pretrained: bool = False, depth: int = 20, width: int = 16, **kwargs: Any) -> CifarResNet:
    """Any depth (6n+2) and base width: stages of (width, 2 width, 4 width) channels (width 16: cifar_resnet<depth>)."""
    return build_registered(CifarResNet, "cifar_resnet", pretrained, depth=depth,
                            widths=(width, width, 2 * width, 4 * width), **kwargs)


@register_model
def cifar_resnet8(pretrained: bool = False, **kwargs: Any) -> CifarResNet:
    return _create("cifar_resnet8", 8, (16, 16, 32, 64), pretrained, **kwargs)


@register_model
def cifar_resnet20(pretrained: bool = False, **kwargs: Any) -> CifarResNet:
    return _create("cifar_resnet20", 20, (16, 16, 32, 64), pretrained, **kwargs)


@register_model
def cifar_resnet32(pretrained: bool = False, **kwargs: Any) -> CifarResNet:
    return _create("cifar_resnet32", 32, (16, 16, 32, 64), pretrained, **kwargs)


@register_model
def cifar_resnet56(pretrained: bool = False, **kwargs: Any) -> CifarResNet:
    return _create("cifar_resnet56", 56, (16, 16, 32, 64), pretrained, **kwargs)


@register_model
def cifar_resnet110(pretrained: bool = False, **kwargs: Any) -> CifarResNet:
    return _create("cifar_resnet110", 110, (16, 16, 32, 64), pretrained, **kwargs)


@register_model
def cifar_resnet8x4(pretrained: bool = False, **kwargs: Any) -> CifarResNet:
    return _create("cifar_resnet8x4", 8, (32, 64, 128, 256), pretrained, **kwargs)


@register_model
def cifar_resnet32x4(pretrained: bool = False, **kwargs: Any) -> CifarResNet:
    return _create("cifar_resnet32x4", 32, (32, 64, 128, 256), pretrained, **kwargs)
