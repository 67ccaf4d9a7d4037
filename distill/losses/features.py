"""Losses on intermediate features: FitNet hints, feature distance, attention transfer, similarity preserving."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from distill.errors import ConfigError
from distill.losses.adapters import make_adapter
from distill.losses.base import DistillBatch, LossTerm, sum_terms
from distill.losses.registry import register_loss

# ---------------------------------------------------------------- pure functions


def hint_loss(adapted_student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """FitNets (Romero et al. 2015): ``mean((r(s) - t)^2)`` over every element, r the trained regressor."""
    return F.mse_loss(adapted_student, teacher)


def feature_distance(student: torch.Tensor, teacher: torch.Tensor, metric: str = "l2") -> torch.Tensor:
    """Distance between feature vectors (flattened per sample), averaged over the batch.

    l2: ``mean((s - t)^2)`` over elements; l1: ``mean(|s - t|)``; smooth_l1: Huber with beta 1, mean;
    cosine: ``mean_b (1 - cos(s_b, t_b))``.
    """
    student, teacher = student.flatten(1), teacher.flatten(1)
    if metric == "l2":
        return F.mse_loss(student, teacher)
    if metric == "l1":
        return F.l1_loss(student, teacher)
    if metric == "smooth_l1":
        return F.smooth_l1_loss(student, teacher)
    if metric == "cosine":
        return (1 - F.cosine_similarity(student, teacher, dim=1)).mean()
    raise ConfigError(f"unknown feature distance metric '{metric}'; choose one of {FEATURE_METRICS}")


FEATURE_METRICS = ("l2", "l1", "smooth_l1", "cosine")


def attention_map(feature: torch.Tensor, p: float = 2.0) -> torch.Tensor:
    """Zagoruyko & Komodakis (2017): ``normalize(mean_c |F|^p)`` flattened per sample (unit L2 norm)."""
    return F.normalize(feature.abs().pow(p).mean(1).flatten(1), dim=1)


def attention_transfer_loss(student: torch.Tensor, teacher: torch.Tensor, p: float = 2.0) -> torch.Tensor:
    """``mean_{b, positions} (a_s - a_t)^2`` for attention maps a of equal spatial size (RepDistiller's form)."""
    if student.shape[-2:] != teacher.shape[-2:]:
        student = F.interpolate(student, size=teacher.shape[-2:], mode="bilinear", align_corners=False)
    return (attention_map(student, p) - attention_map(teacher, p)).pow(2).mean()


def similarity_preserving_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Tung & Mori (2019): ``||G_s - G_t||_F^2 / b^2`` with ``G = row_normalize(A A^T)``, A the flattened features."""
    batch = student.shape[0]
    gram_student = F.normalize(student.flatten(1) @ student.flatten(1).t(), dim=1)
    gram_teacher = F.normalize(teacher.flatten(1) @ teacher.flatten(1).t(), dim=1)
    return (gram_student - gram_teacher).pow(2).sum() / batch**2


# ---------------------------------------------------------------- terms


class FeaturePairTerm(LossTerm):
    """A term that compares one student layer with one teacher layer."""

    def __init__(self, weight: float, student_layer: str, teacher_layer: str) -> None:
        super().__init__(weight)
        self.student_layer, self.teacher_layer = student_layer, teacher_layer
        self.student_layers, self.teacher_layers = (student_layer,), (teacher_layer,)

    def pair(self, batch: DistillBatch) -> tuple[torch.Tensor, torch.Tensor]:
        return batch.student_features[self.student_layer], batch.teacher_features[self.teacher_layer]


@register_loss("fitnet")
class FitNetLoss(FeaturePairTerm):
    """FitNet hint: a regressor (1x1 conv + BN, or linear) maps the student's hint layer to the teacher's.

    ``hint_only_epochs`` > 0 gives the paper's first stage: for those epochs only hint terms train.
    """

    def __init__(self, weight: float, student_layer: str, teacher_layer: str, hint_only_epochs: int = 0) -> None:
        super().__init__(weight, student_layer, teacher_layer)
        self.hint_only_epochs = int(hint_only_epochs)
        self.regressor: nn.Module = nn.Identity()

    def build(self, student_features: dict[str, torch.Tensor], teacher_features: dict[str, torch.Tensor]) -> None:
        self.regressor = make_adapter(student_features[self.student_layer], teacher_features[self.teacher_layer],
                                      always=True)

    def forward(self, batch: DistillBatch) -> torch.Tensor:
        student, teacher = self.pair(batch)
        return hint_loss(self.regressor(student), teacher)


@register_loss("feature_distance")
class FeatureDistanceLoss(FeaturePairTerm):
    """Distance between student and teacher features (default: the penultimate embeddings).

    When the shapes differ, a trainable adapter maps the student feature onto the teacher's.
    """

    def __init__(self, weight: float = 1.0, student_layer: str = "pre_logits", teacher_layer: str = "pre_logits",
                 metric: str = "l2") -> None:
        super().__init__(weight, student_layer, teacher_layer)
        if metric not in FEATURE_METRICS:
            raise ConfigError(f"loss.feature_distance.metric='{metric}' is unknown; choose one of {FEATURE_METRICS}")
        self.metric = metric
        self.adapter: nn.Module = nn.Identity()

    def build(self, student_features: dict[str, torch.Tensor], teacher_features: dict[str, torch.Tensor]) -> None:
        self.adapter = make_adapter(student_features[self.student_layer], teacher_features[self.teacher_layer])

    def forward(self, batch: DistillBatch) -> torch.Tensor:
        student, teacher = self.pair(batch)
        return feature_distance(self.adapter(student), teacher, self.metric)


class LayerPairsTerm(LossTerm):
    """A term over lists of layers, the i-th student layer paired with the i-th teacher layer."""

    def __init__(self, name: str, weight: float, student_layers: Sequence[str], teacher_layers: Sequence[str],
                 minimum: int = 1) -> None:
        super().__init__(weight)
        if len(student_layers) != len(teacher_layers) or len(student_layers) < minimum:
            raise ConfigError(
                f"loss.{name} needs as many student_layers as teacher_layers (at least {_count(minimum)}), got "
                f"{list(student_layers)} and {list(teacher_layers)}"
            )
        self.student_layers, self.teacher_layers = tuple(student_layers), tuple(teacher_layers)

    def pairs(self, batch: DistillBatch) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """(student feature, teacher feature) for each configured pair of layers, in order."""
        return [(batch.student_features[s], batch.teacher_features[t])
                for s, t in zip(self.student_layers, self.teacher_layers)]


def _count(minimum: int) -> str:
    return "one" if minimum == 1 else str(minimum)


@register_loss("at")
class AttentionTransferLoss(LayerPairsTerm):
    """Attention transfer over pairs of layers (summed); channel counts may differ, no adapter needed."""

    def __init__(self, weight: float, student_layers: Sequence[str], teacher_layers: Sequence[str],
                 p: float = 2.0) -> None:
        super().__init__("at", weight, student_layers, teacher_layers)
        self.p = float(p)

    def forward(self, batch: DistillBatch) -> torch.Tensor:
        return sum_terms(attention_transfer_loss(student, teacher, self.p) for student, teacher in self.pairs(batch))


@register_loss("sp")
class SimilarityPreservingLoss(FeaturePairTerm):
    """Similarity-preserving KD: match the batch's pairwise similarity (Gram) matrices."""

    def forward(self, batch: DistillBatch) -> torch.Tensor:
        return similarity_preserving_loss(*self.pair(batch))
