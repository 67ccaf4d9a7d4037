"""Losses on relations between the samples of a batch: correlation congruence, relational KD, probabilistic KT.

Each compares a B x B (or B x B x B) structure computed inside each network, so student and teacher
features may have different widths and need no adapter.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from distill.losses.base import DistillBatch, sum_terms
from distill.losses.features import FeaturePairTerm
from distill.losses.registry import register_loss


def rbf_correlation(features: torch.Tensor, gamma: float, order: int) -> torch.Tensor:
    """Peng et al. (2019): Gaussian-RBF correlation of L2-normalised embeddings by Taylor expansion.

    For unit vectors ``||x - y||^2 = 2 - 2 x.y``, so
    ``exp(-gamma ||x - y||^2) = e^{-2 gamma} sum_p (2 gamma x.y)^p / p!``, truncated after ``order``.
    """
    unit = F.normalize(features.flatten(1), dim=1)
    similarity = unit @ unit.t()
    expansion = sum_terms((2 * gamma * similarity) ** p / math.factorial(p) for p in range(order + 1))
    return math.exp(-2 * gamma) * expansion


def correlation_congruence_loss(student: torch.Tensor, teacher: torch.Tensor, gamma: float = 0.4,
                                order: int = 2) -> torch.Tensor:
    """``||C_s - C_t||_F^2 / b^2`` with C the RBF correlation matrices of the batch."""
    batch = student.shape[0]
    return (rbf_correlation(student, gamma, order) - rbf_correlation(teacher, gamma, order)).pow(2).sum() / batch**2


def normalized_distances(embeddings: torch.Tensor) -> torch.Tensor:
    """Pairwise Euclidean distances divided by their mean over distinct pairs (Park et al. 2019, psi_D)."""
    distances = torch.cdist(embeddings, embeddings)
    off_diagonal = ~torch.eye(len(embeddings), dtype=torch.bool, device=embeddings.device)
    return distances / distances[off_diagonal].mean().clamp_min(1e-12)


def triplet_angles(embeddings: torch.Tensor) -> torch.Tensor:
    """cos of the angle at j between i and k for every (i, j, k): <unit(e_i - e_j), unit(e_k - e_j)> (psi_A)."""
    differences = F.normalize(embeddings.unsqueeze(0) - embeddings.unsqueeze(1), dim=2)  # [j, i] = e_i - e_j
    return torch.bmm(differences, differences.transpose(1, 2)).flatten()


def rkd_loss(student: torch.Tensor, teacher: torch.Tensor, distance_weight: float = 25.0,
             angle_weight: float = 50.0) -> torch.Tensor:
    """Relational KD (Park et al. 2019): Huber loss (beta 1, mean) on psi_D and on psi_A, weighted and summed."""
    student, teacher = student.flatten(1), teacher.flatten(1)
    distance = F.smooth_l1_loss(normalized_distances(student), normalized_distances(teacher))
    angle = F.smooth_l1_loss(triplet_angles(student), triplet_angles(teacher))
    return distance_weight * distance + angle_weight * angle


def pkt_loss(student: torch.Tensor, teacher: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Probabilistic KT (Passalis & Tefas 2018): KL between cosine-similarity kernels turned into row distributions.

    ``K = (cos + 1) / 2``, rows normalised to sum 1; loss ``mean_{i,j} q_ij log((q_ij + eps) / (p_ij + eps))``
    over all b^2 entries (the reference implementation's reduction).
    """

    def conditional(features: torch.Tensor) -> torch.Tensor:
        unit = F.normalize(features.flatten(1), dim=1)
        kernel = (unit @ unit.t() + 1) / 2
        return kernel / kernel.sum(dim=1, keepdim=True)

    student_p, teacher_q = conditional(student), conditional(teacher)
    return (teacher_q * torch.log((teacher_q + eps) / (student_p + eps))).mean()


class EmbeddingPairTerm(FeaturePairTerm):
    """A relation term on one layer per network; the penultimate embeddings by default."""

    def __init__(self, weight: float = 1.0, student_layer: str = "pre_logits",
                 teacher_layer: str = "pre_logits") -> None:
        super().__init__(weight, student_layer, teacher_layer)


@register_loss("cc")
class CorrelationCongruenceLoss(EmbeddingPairTerm):
    def __init__(self, weight: float = 1.0, student_layer: str = "pre_logits", teacher_layer: str = "pre_logits",
                 gamma: float = 0.4, order: int = 2) -> None:
        super().__init__(weight, student_layer, teacher_layer)
        self.gamma, self.order = float(gamma), int(order)

    def forward(self, batch: DistillBatch) -> torch.Tensor:
        return correlation_congruence_loss(*self.pair(batch), self.gamma, self.order)


@register_loss("rkd")
class RelationalKDLoss(EmbeddingPairTerm):
    def __init__(self, weight: float = 1.0, student_layer: str = "pre_logits", teacher_layer: str = "pre_logits",
                 distance_weight: float = 25.0, angle_weight: float = 50.0) -> None:
        super().__init__(weight, student_layer, teacher_layer)
        self.distance_weight, self.angle_weight = float(distance_weight), float(angle_weight)

    def forward(self, batch: DistillBatch) -> torch.Tensor:
        return rkd_loss(*self.pair(batch), self.distance_weight, self.angle_weight)


@register_loss("pkt")
class ProbabilisticKTLoss(EmbeddingPairTerm):
    def forward(self, batch: DistillBatch) -> torch.Tensor:
        return pkt_loss(*self.pair(batch))
