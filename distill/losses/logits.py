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


def dkd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, targets: torch.Tensor, alpha: float,
             beta: float, temperature: float) -> torch.Tensor:
    """Decoupled KD (Zhao et al. 2022): ``alpha * TCKD + beta * NCKD``, both KL divergences times T^2, batch mean.

    TCKD compares the binary (target, all others) probabilities; NCKD the distributions over the non-target
    classes alone (target logit masked out before the softmax).
    """
    target_mask = F.one_hot(targets, student_logits.shape[1]).bool()
    p_student = F.softmax(student_logits / temperature, dim=1)
    p_teacher = F.softmax(teacher_logits / temperature, dim=1)

    def binary(probabilities: torch.Tensor) -> torch.Tensor:
        target = (probabilities * target_mask).sum(1, keepdim=True)
        return torch.cat([target, 1 - target], dim=1)

    b_student, b_teacher = binary(p_student), binary(p_teacher)
    tckd = F.kl_div(b_student.clamp_min(1e-12).log(), b_teacher, reduction="batchmean") * temperature**2
    masked = 1000.0 * target_mask  # a large negative offset: exp() of it is 0 in fp32
    log_nt_student = F.log_softmax(student_logits / temperature - masked, dim=1)
    log_nt_teacher = F.log_softmax(teacher_logits / temperature - masked, dim=1)
    nckd = F.kl_div(log_nt_student, log_nt_teacher, log_target=True, reduction="batchmean") * temperature**2
    return alpha * tckd + beta * nckd


@register_loss("dkd")
class DKDLoss(LossTerm):
    """Decoupled KD with its linear warm-up: the term is scaled by ``min((epoch + 1) / warmup_epochs, 1)``."""

    def __init__(self, weight: float = 1.0, alpha: float = 1.0, beta: float = 8.0, temperature: float = 4.0,
                 warmup_epochs: int = 20) -> None:
        super().__init__(weight)
        if temperature <= 0:
            raise ConfigError(f"loss.dkd.temperature must be > 0, got {temperature}")
        self.alpha, self.beta, self.temperature = float(alpha), float(beta), float(temperature)
        self.warmup_epochs = int(warmup_epochs)

    def forward(self, batch: DistillBatch) -> torch.Tensor:
        warmup = min((batch.epoch + 1) / self.warmup_epochs, 1.0) if self.warmup_epochs > 0 else 1.0
        return warmup * dkd_loss(batch.student_logits, batch.teacher_logits, batch.targets, self.alpha, self.beta,
                                 self.temperature)
