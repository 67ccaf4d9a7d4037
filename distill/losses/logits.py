"""Losses on logits: cross-entropy with the labels, Hinton's KD, decoupled KD, DIST; optional logit standardisation."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from distill.errors import ConfigError
from distill.losses.base import DistillBatch, LossTerm
from distill.losses.registry import register_loss


def standardize_logits(logits: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Logit standardisation (Sun et al. 2024, "Logit Standardization in Knowledge Distillation"): z-score each row.

    ``(z - mean(z)) / (std(z) + eps)`` per sample, std with Bessel's correction (``torch.std``), as in the
    authors' code (``normalize`` in their mdistiller fork). Dividing by a base temperature afterwards makes the
    effective temperature ``T * std(z)``: each network keeps its own logit range.
    """
    return (logits - logits.mean(dim=1, keepdim=True)) / (logits.std(dim=1, keepdim=True) + eps)


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
            temperature: float | torch.Tensor) -> torch.Tensor:
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


class LogitTerm(LossTerm):
    """A term on the logits with a temperature and the ``standardize`` option (z-scored logits, Sun et al. 2024)."""

    def __init__(self, name: str, weight: float, temperature: float, standardize: bool) -> None:
        super().__init__(weight)
        if temperature <= 0:
            raise ConfigError(f"loss.{name}.temperature must be > 0, got {temperature}")
        self.temperature, self.standardize = float(temperature), bool(standardize)

    @property
    def softmax_temperature(self) -> float | None:
        return self.temperature

    def logits(self, batch: DistillBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """Student and teacher logits, z-scored per sample when ``standardize`` is set."""
        teacher_logits = batch.teacher_logits
        assert teacher_logits is not None, "a logit term needs a teacher, so its batches carry the teacher's logits"
        if not self.standardize:
            return batch.student_logits, teacher_logits
        return standardize_logits(batch.student_logits), standardize_logits(teacher_logits)


@register_loss("kd")
class KDLoss(LogitTerm):
    """Softmax KD with temperature ``T`` (see :func:`kd_loss`); ``standardize`` z-scores both logits first."""

    def __init__(self, weight: float = 1.0, temperature: float = 4.0, standardize: bool = False) -> None:
        super().__init__("kd", weight, temperature, standardize)

    def forward(self, batch: DistillBatch) -> torch.Tensor:
        return kd_loss(*self.logits(batch), self.temperature)


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
class DKDLoss(LogitTerm):
    """Decoupled KD with its linear warm-up: the term is scaled by ``min((epoch + 1) / warmup_epochs, 1)``."""

    def __init__(self, weight: float = 1.0, alpha: float = 1.0, beta: float = 8.0, temperature: float = 4.0,
                 warmup_epochs: int = 20, standardize: bool = False) -> None:
        super().__init__("dkd", weight, temperature, standardize)
        self.alpha, self.beta = float(alpha), float(beta)
        self.warmup_epochs = int(warmup_epochs)

    def forward(self, batch: DistillBatch) -> torch.Tensor:
        warmup = min((batch.epoch + 1) / self.warmup_epochs, 1.0) if self.warmup_epochs > 0 else 1.0
        return warmup * dkd_loss(*self.logits(batch), batch.targets, self.alpha, self.beta, self.temperature)


def pearson_rows(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Pearson correlation of each row of ``a`` with the same row of ``b``: cosine of the mean-centred rows.

    ``eps`` is added to the product of the norms, as in the DIST reference code.
    """
    a, b = a - a.mean(dim=1, keepdim=True), b - b.mean(dim=1, keepdim=True)
    return (a * b).sum(dim=1) / (a.norm(dim=1) * b.norm(dim=1) + eps)


def dist_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 4.0,
              beta: float = 1.0, gamma: float = 1.0) -> torch.Tensor:
    """DIST (Huang et al. 2022, "Knowledge Distillation from A Stronger Teacher"): relations, not exact probabilities.

    With ``Y = softmax(z / tau)`` (b x classes), ``inter = tau^2 (1 - mean_i rho(Y_s[i, :], Y_t[i, :]))`` over
    the samples' class distributions and ``intra = tau^2 (1 - mean_c rho(Y_s[:, c], Y_t[:, c]))`` over each
    class's scores across the batch, rho the Pearson correlation; the loss is ``beta inter + gamma intra``.
    As in the reference code (hunto/image_classification_sota, ``DIST``), both are scaled by ``tau^2``.
    """
    p_student = F.softmax(student_logits / temperature, dim=1)
    p_teacher = F.softmax(teacher_logits / temperature, dim=1)
    inter = 1 - pearson_rows(p_student, p_teacher).mean()
    intra = 1 - pearson_rows(p_student.t(), p_teacher.t()).mean()
    return temperature**2 * (beta * inter + gamma * intra)


@register_loss("dist")
class DISTLoss(LogitTerm):
    """DIST's inter- and intra-class Pearson-correlation loss (see :func:`dist_loss`)."""

    def __init__(self, weight: float = 1.0, temperature: float = 4.0, beta: float = 1.0, gamma: float = 1.0,
                 standardize: bool = False) -> None:
        super().__init__("dist", weight, temperature, standardize)
        self.beta, self.gamma = float(beta), float(gamma)

    def forward(self, batch: DistillBatch) -> torch.Tensor:
        return dist_loss(*self.logits(batch), self.temperature, self.beta, self.gamma)
