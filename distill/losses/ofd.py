"""Overhaul of feature distillation: pre-ReLU features, margins from the teacher's BatchNorm, partial L2."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from distill.errors import ConfigError
from distill.feature_taps import PRE_ACT, pre_activation_modules, split_option
from distill.losses.base import DistillBatch
from distill.losses.features import LayerPairsTerm
from distill.losses.maps import pool_to, require_maps
from distill.losses.registry import register_loss


def ofd_margin(bn_weight: torch.Tensor, bn_bias: torch.Tensor) -> torch.Tensor:
    """Heo et al. (2019), "A Comprehensive Overhaul of Feature Distillation": the expected negative response.

    Reading a BatchNorm's affine parameters as the pre-ReLU distribution ``N(m, s^2)`` per channel
    (``s = |gamma|``, ``m = beta``): ``E[x | x < 0] = m - s phi(m/s) / Phi(-m/s)``, or ``-3 s`` where
    ``Phi(-m/s) <= 0.001`` (the reference's ``get_margin``).
    """
    s, m = bn_weight.double().abs(), bn_bias.double()
    below = torch.special.ndtr(-m / s)
    density = torch.exp(-((m / s) ** 2) / 2) / math.sqrt(2 * math.pi)
    return torch.where(below > 0.001, m - s * density / below, -3 * s).float()


def ofd_partial_l2(student: torch.Tensor, teacher: torch.Tensor, margin: torch.Tensor) -> torch.Tensor:
    """The partial L2 distance: no loss where the teacher is off and the student is below it too.

    With the teacher's negatives replaced by the margin m (per channel):
    ``(s - m)^2 [s > m, t <= m] + (s - t)^2 [s > t, m < t <= 0] + (s - t)^2 [t > 0]``, summed over
    channels and positions and averaged over the batch (mdistiller's ``feat_loss``). Computed as that code
    does, with ``t' = max(t, m)``: ``(s - t')^2 [s > t' or t' > 0]``, the same value in a third of the
    elementwise passes over the feature maps (forward and backward).
    """
    target = torch.maximum(teacher, margin.view(1, -1, 1, 1).to(student))
    loss = (student - target).pow(2) * ((student > target) | (target > 0))
    return loss.mean(dim=0).sum()


def ofd_loss(students: Sequence[torch.Tensor], teachers: Sequence[torch.Tensor],
             margins: Sequence[torch.Tensor]) -> torch.Tensor:
    """``sum_l partial_l2(r(s_l), pool(t_l), m_l) / 2^(n - l - 1)``: the deepest layer weighted 1, halving upwards.

    Each teacher map is average-pooled to its student map's size, as in mdistiller's ``OFD``.
    """
    n = len(students)
    return sum(ofd_partial_l2(s, pool_to(t, s.shape[-2:]), m) / 2 ** (n - index - 1)
               for index, (s, t, m) in enumerate(zip(students, teachers, margins)))


def connector(student_channels: int, teacher_channels: int) -> nn.Sequential:
    """1x1 conv + BN from the student's width to the teacher's, initialised as mdistiller's ``ConnectorConvBN``."""
    conv = nn.Conv2d(student_channels, teacher_channels, 1, bias=False)
    nn.init.normal_(conv.weight, 0.0, math.sqrt(2.0 / teacher_channels))
    return nn.Sequential(conv, nn.BatchNorm2d(teacher_channels))


@register_loss("ofd")
class OFDLoss(LayerPairsTerm):
    """OFD on pre-ReLU layers (``@-1:pre_act``, ...): connector per pair, margins from the teacher's BatchNorm.

    Each teacher layer must be a ``:pre_act`` layer whose block has a BatchNorm (the one before its final
    activation, e.g. ``bn2`` of a ResNet BasicBlock); the margins are buffers computed from that
    BatchNorm when the term is attached to the (final) teacher, not saved in checkpoints.
    """

    def __init__(self, weight: float, student_layers: Sequence[str], teacher_layers: Sequence[str]) -> None:
        super().__init__("ofd", weight, student_layers, teacher_layers)
        self.connectors = nn.ModuleList()

    def attach(self, student: nn.Module, teacher: nn.Module | None) -> None:
        assert teacher is not None, "OFD needs a teacher (needs_teacher), so it is attached to one"
        for index, name in enumerate(self.teacher_layers):
            if split_option(name)[1] != PRE_ACT:
                raise ConfigError(f"loss.ofd distils pre-ReLU features, but teacher layer '{name}' is a block's "
                                  f"output; use '{split_option(name)[0]}:{PRE_ACT}'")
            _, norm = pre_activation_modules(teacher, name, "teacher")
            if norm is None or norm.weight is None:
                raise ConfigError(
                    f"loss.ofd: teacher layer '{name}' has no (affine) BatchNorm before its final activation, so OFD "
                    "has no margin for it; pick a ':pre_act' layer of a block with BatchNorm "
                    "(distill-layers +show=teacher lists them)"
                )
            self.register_buffer(f"margin{index}", ofd_margin(norm.weight.detach(), norm.bias.detach()),
                                 persistent=False)

    def margins(self) -> list[torch.Tensor]:
        return [getattr(self, f"margin{index}") for index in range(len(self.teacher_layers))]

    def build(self, student_features: dict[str, torch.Tensor], teacher_features: dict[str, torch.Tensor]) -> None:
        require_maps("ofd", {s: student_features[s] for s in self.student_layers}, "student")
        require_maps("ofd", {t: teacher_features[t] for t in self.teacher_layers}, "teacher")
        self.connectors = nn.ModuleList(connector(student_features[s].shape[1], teacher_features[t].shape[1])
                                        for s, t in zip(self.student_layers, self.teacher_layers))

    def forward(self, batch: DistillBatch) -> torch.Tensor:
        pairs = self.pairs(batch)
        students = [connect(student) for connect, (student, _) in zip(self.connectors, pairs)]
        return ofd_loss(students, [teacher for _, teacher in pairs], self.margins())
