"""Curriculum temperature KD: a learnable global temperature trained adversarially through gradient reversal."""

from __future__ import annotations

import math

import torch
from torch import nn

from distill.errors import ConfigError
from distill.losses.base import DistillBatch, LossTerm
from distill.losses.logits import kd_loss, standardize_logits
from distill.losses.registry import register_loss


class GradientReversal(torch.autograd.Function):
    """Identity forward; backward multiplies the gradient by ``scale`` (Ganin & Lempitsky 2015).

    With the negative ``scale`` of CTKD's schedule the temperature ascends the KD loss while the student
    descends it.
    """

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, x: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.scale = scale
        return x.clone()

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return ctx.scale * grad, None


def cosine_lambda(epoch: int, epochs: int, start: float = 0.0, end: float = -1.0) -> float:
    """CTKD's curriculum: ``lambda`` goes from ``start`` to ``end`` along half a cosine over ``epochs`` epochs.

    ``end + (start - end) (cos(pi min(e, E) / E) + 1) / 2`` for the 1-based epoch e (the reference's loop).
    """
    step = min(max(epoch, 0), epochs)
    return end + (start - end) * (math.cos(step * math.pi / epochs) + 1) / 2


def ctkd_temperature(parameter: torch.Tensor, scale: float, min_temperature: float = 1.0,
                     temperature_range: float = 20.0) -> torch.Tensor:
    """Li et al. (2023), "Curriculum Temperature for Knowledge Distillation": ``T = T_min + T_range sigmoid(theta)``,
    theta behind a gradient-reversal layer of strength ``scale``."""
    return min_temperature + temperature_range * torch.sigmoid(GradientReversal.apply(parameter, scale))


@register_loss("ctkd")
class CTKDLoss(LossTerm):
    """Hinton KD at a learned global temperature (see :func:`ctkd_temperature`); theta starts at 1 (T = 15.6).

    The reversal strength follows :func:`cosine_lambda` from ``lambda_start`` (0) to ``lambda_end`` (-1) over
    ``lambda_epochs`` (10), as the authors' CIFAR script. theta trains with the student (same optimizer, as in
    the reference) and is saved in checkpoints. ``standardize`` z-scores both logits first (Sun et al. 2024).
    """

    def __init__(self, weight: float = 0.9, min_temperature: float = 1.0, temperature_range: float = 20.0,
                 lambda_start: float = 0.0, lambda_end: float = -1.0, lambda_epochs: int = 10,
                 standardize: bool = False) -> None:
        super().__init__(weight)
        if min_temperature <= 0 or temperature_range < 0 or lambda_epochs < 1:
            raise ConfigError(f"loss.ctkd needs min_temperature > 0, temperature_range >= 0 and lambda_epochs >= 1; "
                              f"got {min_temperature}, {temperature_range} and {lambda_epochs}")
        self.min_temperature, self.temperature_range = float(min_temperature), float(temperature_range)
        self.lambda_start, self.lambda_end = float(lambda_start), float(lambda_end)
        self.lambda_epochs = int(lambda_epochs)
        self.standardize = bool(standardize)
        self.theta = nn.Parameter(torch.ones(()))

    def current_temperature(self, epoch: int) -> torch.Tensor:
        scale = cosine_lambda(epoch + 1, self.lambda_epochs, self.lambda_start, self.lambda_end)
        return ctkd_temperature(self.theta, scale, self.min_temperature, self.temperature_range)

    def forward(self, batch: DistillBatch) -> torch.Tensor:
        student, teacher = batch.student_logits, batch.teacher_logits
        if self.standardize:
            student, teacher = standardize_logits(student), standardize_logits(teacher)
        return kd_loss(student, teacher, self.current_temperature(batch.epoch))
