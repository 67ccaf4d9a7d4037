"""Trainable adapters that map a student feature onto the shape of the teacher feature it is compared with."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from distill.errors import ConfigError


class MapAdapter(nn.Module):
    """1x1 conv + BN for channels, then pooling or interpolation to the teacher's spatial size."""

    def __init__(self, student_channels: int, teacher_channels: int, teacher_size: tuple[int, int]) -> None:
        super().__init__()
        self.conv = nn.Conv2d(student_channels, teacher_channels, kernel_size=1, bias=False)
        self.bn = nn.BatchNorm2d(teacher_channels)
        height, width = teacher_size
        self.teacher_size = (height, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn(self.conv(x))
        if tuple(x.shape[-2:]) == self.teacher_size:
            return x
        if x.shape[-2] >= self.teacher_size[0] and x.shape[-1] >= self.teacher_size[1]:
            return F.adaptive_avg_pool2d(x, self.teacher_size)
        return F.interpolate(x, size=self.teacher_size, mode="bilinear", align_corners=False)


def make_adapter(student_feature: torch.Tensor, teacher_feature: torch.Tensor, always: bool = False) -> nn.Module:
    """An adapter from the student's feature shape to the teacher's (identity when they match and not ``always``)."""
    if student_feature.ndim != teacher_feature.ndim or student_feature.ndim not in (2, 4):
        raise ConfigError(
            f"cannot adapt a student feature of shape {tuple(student_feature.shape[1:])} to a teacher feature of "
            f"shape {tuple(teacher_feature.shape[1:])}: both must be vectors (N x D) or maps (N x C x H x W); "
            "pick layers of the same kind (distill-layers lists them)"
        )
    if not always and student_feature.shape[1:] == teacher_feature.shape[1:]:
        return nn.Identity()
    if student_feature.ndim == 2:
        return nn.Linear(student_feature.shape[1], teacher_feature.shape[1])
    return MapAdapter(student_feature.shape[1], teacher_feature.shape[1],
                      (teacher_feature.shape[-2], teacher_feature.shape[-1]))
