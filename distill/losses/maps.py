"""Losses on lists of feature maps with no trainable parts: NST, KDSVD and FSP.

Each compares structures computed inside each network (kernels over channels, singular vectors, Gram
matrices between stages), so they follow the reference implementations' layer lists: the three stages
of a CIFAR ResNet (RepDistiller's ``feat[1:-1]``, mdistiller's ``feats[1:]``), plus the stem for FSP.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from distill.errors import ConfigError
from distill.losses.base import DistillBatch, check_stages, sum_terms
from distill.losses.features import LayerPairsTerm
from distill.losses.registry import register_loss


def match_spatial(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Average-pool the larger of two maps to the spatial size of the smaller (the reference implementations' rule)."""
    if a.shape[-2:] == b.shape[-2:]:
        return a, b
    if a.shape[-2] > b.shape[-2]:
        return F.adaptive_avg_pool2d(a, (b.shape[-2], b.shape[-1])), b
    return a, F.adaptive_avg_pool2d(b, (a.shape[-2], a.shape[-1]))


def pool_to(maps: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """``adaptive_avg_pool2d(maps, size)``, skipped where the maps already have that size: the pool is then the
    identity, but its CPU kernel still takes ~35 ms forward and more backward on a 128 x 32 x 28 x 28 batch."""
    height, width = size
    return maps if tuple(maps.shape[-2:]) == (height, width) else F.adaptive_avg_pool2d(maps, (height, width))


# ---------------------------------------------------------------- NST


def polynomial_kernel_mean(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``mean_{n, i, j} (a[n, i] . b[n, j])^2``: the degree-2 polynomial kernel (c = 0) over all channel pairs."""
    return (a @ b.transpose(1, 2)).pow(2).mean()


def nst_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Neuron selectivity transfer (Huang & Wang 2017, "Like What You Like"): squared MMD, polynomial kernel.

    Each channel's map is flattened and L2-normalised over positions (``f_i / ||f_i||``); with
    ``k(x, y) = (x . y)^2`` the loss is
    ``mean_{i,i'} k(t_i, t_i') + mean_{j,j'} k(s_j, s_j') - 2 mean_{i,j} k(s_j, t_i)``,
    means over channel pairs and the batch. The larger map is average-pooled to the smaller one's size
    first, as in RepDistiller's ``NSTLoss`` (whose full loss this is, teacher-teacher part detached).
    """
    student, teacher = match_spatial(student, teacher)
    s = F.normalize(student.flatten(2), dim=2)
    t = F.normalize(teacher.flatten(2), dim=2)
    return (polynomial_kernel_mean(t, t).detach() + polynomial_kernel_mean(s, s)
            - 2 * polynomial_kernel_mean(s, t))


# ---------------------------------------------------------------- KDSVD


def finite(x: torch.Tensor) -> torch.Tensor:
    """Non-finite entries (from a degenerate SVD) set to 0, as the reference's ``removenan``."""
    return torch.where(torch.isfinite(x), x, torch.zeros_like(x))


def leading_singular(feature: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``n`` singular values (b x n) and right singular vectors (b x C x n) of each sample's HW x C map.

    Both are L2-normalised (values across the n, each vector across channels), as in the reference.
    """
    x = feature.flatten(2).transpose(1, 2)  # b x HW x C
    _, values, vectors_h = torch.linalg.svd(x, full_matrices=False)
    values, vectors = finite(values), finite(vectors_h.transpose(1, 2))
    return F.normalize(values[:, :n], dim=1), F.normalize(vectors[:, :, :n], dim=1)


def align_singular_vectors(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """For each teacher vector, the student vector with the largest |cosine|, sign-flipped to agree with it."""
    cosine = student.transpose(1, 2) @ teacher  # b x n_s x n_t
    best = cosine.abs().amax(dim=1, keepdim=True)
    selection = torch.where(cosine.abs() == best, torch.sign(cosine), torch.zeros_like(cosine))
    return student @ selection


def kdsvd_loss(students: Sequence[torch.Tensor], teachers: Sequence[torch.Tensor], k: int = 1) -> torch.Tensor:
    """KD with singular value decomposition (Lee et al. 2018, "Self-supervised KD using SVD"), RepDistiller's form.

    Per layer: the teacher's first k right singular vectors V_t (channels x k) and the student's first k + 3
    (aligned to the teacher's by |cosine|), both scaled by the teacher's normalised singular values. Between
    consecutive layers l-1, l: ``R[c, c', m] = exp(-(V_l[c, m] - V_{l-1}[c', m])^2 / 8)``; the loss is
    ``sum_l sum (R_s - R_t)^2 / b`` (non-finite entries dropped). Student and teacher layers need equal
    channel counts.
    """
    total = students[0].new_zeros(())
    previous: tuple[torch.Tensor, torch.Tensor] | None = None
    for student, teacher in zip(students, teachers):
        values_t, vectors_t = leading_singular(teacher, k)
        _, vectors_s = leading_singular(student, k + 3)
        vectors_s = align_singular_vectors(vectors_s, vectors_t)
        scale = values_t.unsqueeze(1)
        vectors_s, vectors_t = vectors_s * scale, vectors_t * scale
        if previous is not None:
            rbf_s = torch.exp(-(vectors_s.unsqueeze(2) - previous[0].unsqueeze(1)).pow(2) / 8)
            rbf_t = torch.exp(-(vectors_t.unsqueeze(2) - previous[1].unsqueeze(1)).pow(2) / 8)
            total = total + finite((rbf_s - rbf_t.detach()).pow(2)).sum()
        previous = (vectors_s, vectors_t)
    return total / students[0].shape[0]


# ---------------------------------------------------------------- FSP


def fsp_matrix(bottom: torch.Tensor, top: torch.Tensor) -> torch.Tensor:
    """Yim et al. (2017), "A Gift from Knowledge Distillation": ``G[i, j] = mean_{positions} F_bottom[i] F_top[j]``.

    b x C_bottom x C_top; the larger map is average-pooled to the smaller's size first (RepDistiller).
    """
    bottom, top = match_spatial(bottom, top)
    return bottom.flatten(2) @ top.flatten(2).transpose(1, 2) / bottom[0, 0].numel()


def fsp_loss(students: Sequence[torch.Tensor], teachers: Sequence[torch.Tensor]) -> torch.Tensor:
    """``sum_l mean((G_s(l, l+1) - G_t(l, l+1))^2)`` over consecutive layers (at least two).

    The mean runs over the batch and the matrix entries, as RepDistiller's ``FSP``; the paper sums the entries.
    """
    return sum_terms(
        (fsp_matrix(students[i], students[i + 1]) - fsp_matrix(teachers[i], teachers[i + 1])).pow(2).mean()
        for i in range(len(students) - 1)
    )


# ---------------------------------------------------------------- terms


def require_equal_channels(name: str, term: LayerPairsTerm, student_features: dict[str, torch.Tensor],
                           teacher_features: dict[str, torch.Tensor], why: str) -> None:
    """Fail before training, naming each pair of layers whose channel counts differ and the fix."""
    unequal = [f"student '{s}' has {student_features[s].shape[1]}, teacher '{t}' has {teacher_features[t].shape[1]}"
               for s, t in zip(term.student_layers, term.teacher_layers)
               if student_features[s].shape[1] != teacher_features[t].shape[1]]
    if unequal:
        raise ConfigError(
            f"loss.{name} needs equal channel counts in each pair of layers ({why}), but {'; '.join(unequal)} "
            "channels; pick layers of equal width (distill-layers +show=both lists them) or a student as wide as "
            "the teacher (e.g. teacher=cifar_resnet20 student=cifar_resnet8)"
        )


def require_maps(name: str, features: dict[str, torch.Tensor], role: str) -> None:
    flat = [f"'{layer}' {tuple(f.shape[1:])}" for layer, f in features.items() if f.ndim != 4]
    if flat:
        raise ConfigError(f"loss.{name} compares feature maps (C x H x W), but {role} layer(s) {', '.join(flat)} "
                          "are not; pick convolutional stages (distill-layers lists them)")


@register_loss("nst")
class NSTLoss(LayerPairsTerm):
    """Neuron selectivity transfer summed over pairs of layers (see :func:`nst_loss`); widths may differ."""

    def __init__(self, weight: float, student_layers: Sequence[str], teacher_layers: Sequence[str]) -> None:
        super().__init__("nst", weight, student_layers, teacher_layers)

    def build(self, student_features: dict[str, torch.Tensor], teacher_features: dict[str, torch.Tensor]) -> None:
        require_maps("nst", {s: student_features[s] for s in self.student_layers}, "student")
        require_maps("nst", {t: teacher_features[t] for t in self.teacher_layers}, "teacher")

    def forward(self, batch: DistillBatch) -> torch.Tensor:
        return sum_terms(nst_loss(student, teacher) for student, teacher in self.pairs(batch))


@register_loss("kdsvd")
class KDSVDLoss(LayerPairsTerm):
    """KDSVD over at least two pairs of layers (see :func:`kdsvd_loss`)."""

    def __init__(self, weight: float, student_layers: Sequence[str], teacher_layers: Sequence[str],
                 k: int = 1) -> None:
        super().__init__("kdsvd", weight, student_layers, teacher_layers, minimum=2)
        self.k = int(k)

    def build(self, student_features: dict[str, torch.Tensor], teacher_features: dict[str, torch.Tensor]) -> None:
        require_maps("kdsvd", {s: student_features[s] for s in self.student_layers}, "student")
        require_maps("kdsvd", {t: teacher_features[t] for t in self.teacher_layers}, "teacher")
        require_equal_channels("kdsvd", self, student_features, teacher_features,
                               "singular vectors are compared channel by channel")

    def forward(self, batch: DistillBatch) -> torch.Tensor:
        students, teachers = zip(*self.pairs(batch))
        return kdsvd_loss(students, teachers, self.k)


@register_loss("fsp")
class FSPLoss(LayerPairsTerm):
    """FSP matrices of consecutive layers; an initialisation stage of ``hint_only_epochs`` by default (RepDistiller).

    RepDistiller trains the student's feature layers on FSP alone for 30 epochs, then on cross-entropy
    alone (its FSP term is 0 in the main stage): ``main_stage: false``. ``main_stage: true`` keeps it on.
    """

    def __init__(self, weight: float, student_layers: Sequence[str], teacher_layers: Sequence[str],
                 hint_only_epochs: int = 30, main_stage: bool = False) -> None:
        super().__init__("fsp", weight, student_layers, teacher_layers, minimum=2)
        self.hint_only_epochs, self.main_stage = int(hint_only_epochs), bool(main_stage)
        check_stages("fsp", self.hint_only_epochs, self.main_stage)

    def build(self, student_features: dict[str, torch.Tensor], teacher_features: dict[str, torch.Tensor]) -> None:
        require_maps("fsp", {s: student_features[s] for s in self.student_layers}, "student")
        require_maps("fsp", {t: teacher_features[t] for t in self.teacher_layers}, "teacher")
        require_equal_channels("fsp", self, student_features, teacher_features,
                               "FSP compares C_l x C_l+1 matrices of consecutive layers")

    def forward(self, batch: DistillBatch) -> torch.Tensor:
        students, teachers = zip(*self.pairs(batch))
        return fsp_loss(students, teachers)

