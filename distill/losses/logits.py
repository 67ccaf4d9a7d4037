"""Losses on logits: cross-entropy with the labels and Hinton's softened-softmax distillation."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from distill.errors import ConfigError
from distill.losses.base import DistillBatch, LossTerm
from distill.losses.registry import register_loss


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Hinton, Vinyals & Dean (2015), "Distilling the Knowledge in a Neural Network".

    ``T^2 * mean_batch sum_classes p_t log(p_t / p_s)`` with ``p = softmax(logits / T)``: the KL
    divergence from the teacher's to the student's softened distribution, summed over classes,
    averaged over the batch, scaled by T^2 so its gradients keep their size as T changes.
    """
    log_p_student = F.log_softmax(student_logits / temperature, dim=1)
    log_p_teacher = F.log_softmax(teacher_logits / temperature, dim=1)
    return F.kl_div(log_p_student, log_p_teacher, log_target=True, reduction="batchmean") * temperature**2


@register_loss("ce")
class CrossEntropyLoss(LossTerm):
    """Cross-entropy with the ground-truth labels (optionally label-smoothed), averaged over the batch."""

    needs_teacher = False

    def __init__(self, weight: float = 1.0, label_smoothing: float = 0.0) -> None:
        super().__init__(weight)
        self.label_smoothing = label_smoothing

    def forward(self, batch: DistillBatch) -> torch.Tensor:
        return F.cross_entropy(batch.student_logits, batch.targets, label_smoothing=self.label_smoothing)


@register_loss("kd")
class KDLoss(LossTerm):
    """Softmax KD with temperature ``T`` (see :func:`kd_loss`)."""

    def __init__(self, weight: float = 1.0, temperature: float = 4.0) -> None:
        super().__init__(weight)
        if temperature <= 0:
            raise ConfigError(f"loss.kd.temperature must be > 0, got {temperature}")
        self.temperature = float(temperature)

    def forward(self, batch: DistillBatch) -> torch.Tensor:
        return kd_loss(batch.student_logits, batch.teacher_logits, self.temperature)
