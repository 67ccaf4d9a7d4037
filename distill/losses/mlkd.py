"""Multi-level logit distillation (MLKD): instance-, batch- and class-level alignment over several temperatures."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from distill.errors import ConfigError
from distill.losses.base import DistillBatch
from distill.losses.logits import LogitTerm, kd_loss
from distill.losses.registry import register_loss

Views = torch.Tensor | Sequence[torch.Tensor]  # one view's logits (b x C), or several views of the same images


def batch_correlation_loss(p_student: torch.Tensor, p_teacher: torch.Tensor) -> torch.Tensor:
    """``||P_t P_t^T - P_s P_s^T||_F^2 / b``: the b x b Gram matrices of the samples' class distributions."""
    return (p_teacher @ p_teacher.T - p_student @ p_student.T).pow(2).sum() / p_student.shape[0]


def class_correlation_loss(p_student: torch.Tensor, p_teacher: torch.Tensor) -> torch.Tensor:
    """``||P_t^T P_t - P_s^T P_s||_F^2 / C``: the C x C Gram matrices of the classes' scores across the batch."""
    return (p_teacher.T @ p_teacher - p_student.T @ p_student).pow(2).sum() / p_student.shape[1]


def share_at_or_below_median(scores: torch.Tensor) -> torch.Tensor:
    """The fraction of ``scores`` at most their median (linear interpolation, as ``np.percentile(scores, 50)``)."""
    scores = scores.to(torch.promote_types(scores.dtype, torch.float32))  # quantile takes float32 or float64 only
    return (scores <= torch.quantile(scores, 0.5)).to(scores.dtype).mean()


def mlkd_loss(student_logits: Views, teacher_logits: Views, temperatures: Sequence[float]) -> torch.Tensor:
    """Multi-level logit distillation (Jin, Wang & Lin, CVPR 2023, "Multi-Level Logit Distillation").

    ``student_logits``/``teacher_logits``: one view (b x C) or several views of the same images, the first the
    weakly augmented one. With ``P = softmax(z / T)`` of the first view, summed over the temperatures ``T``::

        f_b * (T^2 mean_i KL(P_t[i] || P_s[i]) + ||P_t P_t^T - P_s P_s^T||^2 / b)
          + f_C * ||P_t^T P_t - P_s^T P_s||^2 / C

    the instance, batch (b x b) and class (C x C) levels; each further view adds its instance level,
    ``T^2 mean_i KL``, at every temperature, unmasked.

    The paper aligns the three levels over several temperatures ("prediction augmentation"); the details follow
    the authors' code (Jin-Ying/Multi-Level-Logit-Distillation, ``mdistiller/distillers/KD_ours.py``): KL times
    T^2, the Gram terms without it; the confidence "masks" come from the first view's teacher at T = 1
    (``f_b``: the share of samples whose top probability is at most the batch median; ``f_C``: the share of
    classes whose summed probability is at most the median) and, as the code multiplies them onto losses already
    reduced to scalars, they scale those losses by the share (1/2 for an even count without ties) rather than
    selecting samples. The further views are the code's strongly augmented view, on which only the instance
    level is trained (its Gram terms are computed there but never added); at T = 2 and 6 the code's "strong"
    instance terms read the weak view's logits, which we take for a slip and do not copy.
    """
    students = [student_logits] if isinstance(student_logits, torch.Tensor) else list(student_logits)
    teachers = [teacher_logits] if isinstance(teacher_logits, torch.Tensor) else list(teacher_logits)
    if not students or len(students) != len(teachers):
        raise ValueError(f"mlkd_loss needs one teacher view per student view, got {len(students)} student and "
                         f"{len(teachers)} teacher views")
    instance, batch, classes = mlkd_levels(students[0], teachers[0], temperatures)
    total = instance + batch + classes
    for temperature in temperatures:
        for student, teacher in zip(students[1:], teachers[1:]):
            total = total + kd_loss(student, teacher, temperature)
    return total


def mlkd_levels(student: torch.Tensor, teacher: torch.Tensor,
                temperatures: Sequence[float]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """MLKD's instance, batch and class levels on one view (b x C logits), each masked and summed over the
    temperatures: their sum is :func:`mlkd_loss` of that view (scripts/mlkd_levels.py prints them apart)."""
    confidence = F.softmax(teacher.detach(), dim=1)
    sample_share = share_at_or_below_median(confidence.amax(dim=1))
    class_share = share_at_or_below_median(confidence.sum(dim=0))
    instance = batch = classes = student.new_zeros(())
    for temperature in temperatures:
        p_student = F.softmax(student / temperature, dim=1)
        p_teacher = F.softmax(teacher / temperature, dim=1)
        instance = instance + sample_share * kd_loss(student, teacher, temperature)
        batch = batch + sample_share * batch_correlation_loss(p_student, p_teacher)
        classes = classes + class_share * class_correlation_loss(p_student, p_teacher)
    return instance, batch, classes


@register_loss("mlkd")
class MLKDLoss(LogitTerm):
    """MLKD on the one view of each image a training step has (see :func:`mlkd_loss`).

    The authors' strongly augmented second view needs the images, which a term does not receive, so this is
    MLKD without it. ``standardize`` z-scores both logits before all three levels (the logit-standardisation
    authors' ``MLKD.py``, sunshangquan/logit-standardization-KD, z-scores those of the instance level only).
    """

    def __init__(self, weight: float = 1.0, temperatures: Sequence[float] = (2.0, 3.0, 4.0, 5.0, 6.0),
                 standardize: bool = False) -> None:
        numbers = isinstance(temperatures, Sequence) and not isinstance(temperatures, str) and all(
            isinstance(t, (int, float)) and not isinstance(t, bool) and t > 0 for t in temperatures)
        if not numbers or not temperatures:
            raise ConfigError(f"loss.mlkd.temperatures must be a non-empty list of numbers > 0, got {temperatures!r}; "
                              f"e.g. loss.mlkd.temperatures='[2,3,4,5,6]'")
        # LogitTerm holds one temperature, which this term does not read: the smallest stands in for all.
        super().__init__("mlkd", weight, min(temperatures), standardize)
        self.temperatures = tuple(float(t) for t in temperatures)

    @property
    def softmax_temperature(self) -> float | None:
        # Several temperatures: top-k probabilities stored at one of them would misrepresent the others.
        return None

    def forward(self, batch: DistillBatch) -> torch.Tensor:
        return mlkd_loss(*self.logits(batch), self.temperatures)

    def extra_repr(self) -> str:
        return f"weight={self.weight}, temperatures={self.temperatures}, standardize={self.standardize}"
