"""Variational information distillation: a Gaussian over the teacher's maps, predicted from the student's."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from distill.losses.base import DistillBatch
from distill.losses.features import LayerPairsTerm
from distill.losses.maps import match_spatial, require_maps
from distill.losses.registry import register_loss


def vid_loss(predicted_mean: torch.Tensor, teacher: torch.Tensor, variance: torch.Tensor) -> torch.Tensor:
    """Ahn et al. (2019), "Variational Information Distillation for Knowledge Transfer".

    Negative log-likelihood of the teacher's map under ``N(mu(s), sigma^2)`` with a learned variance per
    channel, constant ``log sqrt(2 pi)`` dropped: ``mean_{b,c,h,w} 0.5 ((mu - t)^2 / sigma_c^2 + log sigma_c^2)``
    (a mean over all elements, as RepDistiller's and mdistiller's ``VIDLoss``).
    """
    variance = variance.view(1, -1, 1, 1)
    return (0.5 * ((predicted_mean - teacher).pow(2) / variance + variance.log())).mean()


class VIDHead(nn.Module):
    """The student side of one VID pair: 1x1 conv - ReLU - 1x1 conv - ReLU - 1x1 conv regressor for the mean,
    and ``sigma_c^2 = softplus(alpha_c) + eps`` per teacher channel, ``alpha`` set so that sigma^2 starts at
    ``initial_variance`` (5.0, the authors' value). The middle width is the teacher's, as in the references.
    """

    def __init__(self, student_channels: int, teacher_channels: int, initial_variance: float = 5.0,
                 eps: float = 1e-5) -> None:
        super().__init__()
        self.regressor = nn.Sequential(
            nn.Conv2d(student_channels, teacher_channels, 1, bias=False), nn.ReLU(),
            nn.Conv2d(teacher_channels, teacher_channels, 1, bias=False), nn.ReLU(),
            nn.Conv2d(teacher_channels, teacher_channels, 1, bias=False),
        )
        inverse_softplus = math.log(math.expm1(initial_variance - eps))
        self.alpha = nn.Parameter(torch.full((teacher_channels,), inverse_softplus))
        self.eps = eps

    def variance(self) -> torch.Tensor:
        return F.softplus(self.alpha) + self.eps

    def forward(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        student, teacher = match_spatial(student, teacher)
        return vid_loss(self.regressor(student), teacher, self.variance())


@register_loss("vid")
class VIDLoss(LayerPairsTerm):
    """VID summed over pairs of layers, one :class:`VIDHead` per pair (trained with the student, checkpointed)."""

    def __init__(self, weight: float, student_layers: Sequence[str], teacher_layers: Sequence[str],
                 initial_variance: float = 5.0, eps: float = 1e-5) -> None:
        super().__init__("vid", weight, student_layers, teacher_layers)
        self.initial_variance, self.eps = float(initial_variance), float(eps)
        self.heads = nn.ModuleList()

    def build(self, student_features: dict[str, torch.Tensor], teacher_features: dict[str, torch.Tensor]) -> None:
        require_maps("vid", {s: student_features[s] for s in self.student_layers}, "student")
        require_maps("vid", {t: teacher_features[t] for t in self.teacher_layers}, "teacher")
        self.heads = nn.ModuleList(
            VIDHead(student_features[s].shape[1], teacher_features[t].shape[1], self.initial_variance, self.eps)
            for s, t in zip(self.student_layers, self.teacher_layers)
        )

    def forward(self, batch: DistillBatch) -> torch.Tensor:
        return sum(head(student, teacher) for head, (student, teacher) in zip(self.heads, self.pairs(batch)))
