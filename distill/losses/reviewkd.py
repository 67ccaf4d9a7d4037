"""ReviewKD: attention-based fusion of the student's stages, deep to shallow, matched to the teacher's by HCL."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from distill.errors import ConfigError
from distill.losses.base import DistillBatch
from distill.losses.features import LayerPairsTerm
from distill.losses.registry import register_loss


def hcl_loss(students: Sequence[torch.Tensor], teachers: Sequence[torch.Tensor]) -> torch.Tensor:
    """Chen et al. (2021), "Distilling Knowledge via Knowledge Review": hierarchical context loss.

    Per level: ``(MSE(s, t) + sum_k w_k MSE(pool_k(s), pool_k(t))) / (1 + sum_k w_k)`` over the average-pooled
    sizes k = 4, 2, 1 smaller than the map, ``w`` halving (1/2, 1/4, 1/8); summed over levels
    (mdistiller's ``hcl_loss``).
    """
    total = students[0].new_zeros(())
    for student, teacher in zip(students, teachers):
        loss, weight, weights = F.mse_loss(student, teacher), 1.0, 1.0
        for size in (4, 2, 1):
            if size >= student.shape[-2]:
                continue
            weight /= 2
            loss = loss + weight * F.mse_loss(F.adaptive_avg_pool2d(student, size),
                                              F.adaptive_avg_pool2d(teacher, size))
            weights += weight
        total = total + loss / weights
    return total


class ABF(nn.Module):
    """Attention-based fusion: 1x1 conv + BN to ``mid`` channels, fused with the deeper level's residual by two
    sigmoid attention maps, then 3x3 conv + BN to the teacher's channels at the teacher's size."""

    def __init__(self, in_channels: int, mid_channels: int, out_channels: int, fuse: bool) -> None:
        super().__init__()
        conv1 = nn.Conv2d(in_channels, mid_channels, 1, bias=False)
        self.conv1 = nn.Sequential(conv1, nn.BatchNorm2d(mid_channels))
        conv2 = nn.Conv2d(mid_channels, out_channels, 3, padding=1, bias=False)
        self.conv2 = nn.Sequential(conv2, nn.BatchNorm2d(out_channels))
        self.att_conv = nn.Sequential(nn.Conv2d(2 * mid_channels, 2, 1), nn.Sigmoid()) if fuse else None
        nn.init.kaiming_uniform_(conv1.weight, a=1)
        nn.init.kaiming_uniform_(conv2.weight, a=1)

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None,
                out_size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """(output for the teacher's level, residual for the next shallower level)."""
        x = self.conv1(x)
        if self.att_conv is not None:
            assert residual is not None, "a fusing ABF gets the deeper level's residual"
            residual = F.interpolate(residual, x.shape[-2:], mode="nearest")
            attention = self.att_conv(torch.cat([x, residual], dim=1))
            x = x * attention[:, 0:1] + residual * attention[:, 1:2]
        fused = x
        if tuple(x.shape[-2:]) != tuple(out_size):
            x = F.interpolate(x, out_size, mode="nearest")
        return self.conv2(x), fused


def as_map(feature: torch.Tensor) -> torch.Tensor:
    """A map as is; a vector (the pooled embedding) as a 1 x 1 map."""
    return feature if feature.ndim == 4 else feature.view(*feature.shape, 1, 1)


@register_loss("reviewkd")
class ReviewKDLoss(LayerPairsTerm):
    """ReviewKD over student and teacher levels listed shallow to deep (the deepest may be ``pre_logits``).

    Starting from the deepest student level, each ABF fuses its level with the residual of the deeper one;
    level l's output is compared with teacher level l by :func:`hcl_loss`. The term ramps up linearly over
    ``warmup_epochs``, ``min((epoch + 1) / warmup, 1)``, as mdistiller's ReviewKD.
    """

    def __init__(self, weight: float, student_layers: Sequence[str], teacher_layers: Sequence[str],
                 warmup_epochs: int = 20, max_mid_channels: int = 512) -> None:
        super().__init__("reviewkd", weight, student_layers, teacher_layers, minimum=2)
        self.warmup_epochs, self.max_mid_channels = int(warmup_epochs), int(max_mid_channels)
        self.abfs = nn.ModuleList()  # deepest level first
        self.out_sizes: list[tuple[int, int]] = []

    def build(self, student_features: dict[str, torch.Tensor], teacher_features: dict[str, torch.Tensor]) -> None:
        students = [as_map(student_features[s]) for s in self.student_layers]
        teachers = [as_map(teacher_features[t]) for t in self.teacher_layers]
        bad = [f"'{name}' {tuple(f.shape[1:])}" for name, f in zip(self.student_layers + self.teacher_layers,
                                                                     students + teachers) if f.ndim != 4]
        if bad:
            raise ConfigError(f"loss.reviewkd takes maps or vectors, not {', '.join(bad)}")
        mid = min(self.max_mid_channels, students[-1].shape[1])
        deepest_first = list(zip(students, teachers))[::-1]
        self.abfs = nn.ModuleList(ABF(s.shape[1], mid, t.shape[1], fuse=index > 0)
                                  for index, (s, t) in enumerate(deepest_first))
        self.out_sizes = [(t.shape[-2], t.shape[-1]) for _, t in deepest_first]

    def forward(self, batch: DistillBatch) -> torch.Tensor:
        pairs = [(as_map(s), as_map(t)) for s, t in self.pairs(batch)]
        outputs: list[torch.Tensor] = []
        residual: torch.Tensor | None = None
        for abf, out_size, (student, _) in zip(self.abfs, self.out_sizes, pairs[::-1]):
            output, residual = abf(student, residual, out_size)
            outputs.insert(0, output)
        warmup = min((batch.epoch + 1) / self.warmup_epochs, 1.0) if self.warmup_epochs > 0 else 1.0
        return warmup * hcl_loss(outputs, [teacher for _, teacher in pairs])
