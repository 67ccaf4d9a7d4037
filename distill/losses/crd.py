"""Contrastive representation distillation: embeddings, two momentum memory banks indexed by sample, NCE."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from distill.data.registry import with_sample_labels
from distill.errors import ConfigError
from distill.losses.base import DistillBatch, check_sample_labels
from distill.losses.features import FeaturePairTerm
from distill.losses.registry import register_loss

CRD_MODES = ("exact", "relax")
EPS = 1e-7


def contrast_scores(anchors: torch.Tensor, memory: torch.Tensor, contrast_indices: torch.Tensor,
                    temperature: float) -> torch.Tensor:
    """``exp(m_j . v_i / T)`` for each anchor v_i (b x d) and the memory rows j = contrast_indices[i] (b x (K+1)).

    Gathering the rows first (RepDistiller's way) materialises b x (K+1) x d floats: 1 GB a bank for b 128,
    K 16,384, d 128, written and kept for backward. When the bank has fewer rows than that gather
    (N <= (K+1) d; CIFAR's and Fashion-MNIST's 50-55 k), scoring every row against the batch (N x b, 28 MB
    here) and picking the contrast entries gives the same dot products for a fraction of the memory traffic.
    """
    memory = memory.detach()
    if len(memory) <= contrast_indices.shape[1] * memory.shape[1]:
        # A copy (N x d) for backward: the bank is updated in place after this step's scores.
        dots = (anchors @ memory.clone().T).gather(1, contrast_indices)  # b x N, then b x (K + 1)
    else:
        dots = torch.bmm(memory[contrast_indices], anchors.unsqueeze(2)).squeeze(2)  # b x (K + 1) x d rows first
    return torch.exp(dots / temperature)


def nce_loss(scores: torch.Tensor, num_data: int) -> torch.Tensor:
    """Tian et al. (2020), "Contrastive Representation Distillation", Eq. 18 (RepDistiller's ``ContrastLoss``).

    ``scores`` are normalised scores ``P = exp(v . m / T) / Z``, column 0 the positive, the K others negatives
    drawn from a uniform noise distribution ``P_n = 1 / N``:
    ``-(sum_i log(P_i0 / (P_i0 + K/N + eps)) + sum_{i,k} log((K/N) / (P_ik + K/N + eps))) / b``.
    """
    noise = (scores.shape[1] - 1) / num_data
    positive = torch.log(scores[:, 0] / (scores[:, 0] + noise + EPS))
    negative = torch.log(noise / (scores[:, 1:] + noise + EPS))
    return -(positive.sum() + negative.sum()) / scores.shape[0]


def momentum_update(memory: torch.Tensor, indices: torch.Tensor, embeddings: torch.Tensor, momentum: float) -> None:
    """``m_i <- normalize(momentum m_i + (1 - momentum) v_i)`` for the batch's samples, in place."""
    with torch.no_grad():
        mixed = memory[indices] * momentum + embeddings.detach() * (1 - momentum)
        memory.index_copy_(0, indices, F.normalize(mixed, dim=1))


class Embed(nn.Module):
    """Linear projection to ``feature_dim``, then L2 normalisation (CRD's embedding heads)."""

    def __init__(self, in_features: int, feature_dim: int) -> None:
        super().__init__()
        self.linear = nn.Linear(in_features, feature_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.linear(x.flatten(1)), dim=1)


@register_loss("crd")
class CRDLoss(FeaturePairTerm):
    """CRD between the penultimate features: both directions (student anchor against the teacher's memory and
    teacher anchor against the student's), ``K`` negatives of other classes per sample.

    The memory banks (N x feature_dim each) and the two NCE normalising constants Z (fixed on the first
    batch: ``Z = mean(exp(v . m / T)) N``) are buffers, so they are saved in checkpoints and restored on
    resume; they are sized from the training set when fitting starts (``attach_data``), which needs a data
    module that hands each sample's index to the step. ``mode: exact`` takes the sample itself as the
    positive; ``relax`` a random sample of its class (RepDistiller's ``CIFAR100InstanceSample``).
    """

    needs_sample_labels = True
    # Buffers registered by attach_data once the training set is known.
    order: torch.Tensor
    counts: torch.Tensor
    offsets: torch.Tensor
    memory_student: torch.Tensor
    memory_teacher: torch.Tensor
    normalizers: torch.Tensor

    def __init__(self, weight: float = 0.8, student_layer: str = "pre_logits", teacher_layer: str = "pre_logits",
                 feature_dim: int = 128, negatives: int = 16384, temperature: float = 0.07, momentum: float = 0.5,
                 mode: str = "exact") -> None:
        super().__init__(weight, student_layer, teacher_layer)
        if mode not in CRD_MODES:
            raise ConfigError(f"loss.crd.mode='{mode}' is unknown; choose one of {CRD_MODES}")
        if negatives < 1 or temperature <= 0 or not 0 <= momentum < 1:
            raise ConfigError(f"loss.crd needs negatives >= 1, temperature > 0 and 0 <= momentum < 1; got "
                              f"negatives={negatives}, temperature={temperature}, momentum={momentum}")
        self.feature_dim, self.negatives = int(feature_dim), int(negatives)
        self.temperature, self.momentum, self.mode = float(temperature), float(momentum), mode
        self.embed_student: nn.Module = nn.Identity()
        self.embed_teacher: nn.Module = nn.Identity()

    def build(self, student_features: dict[str, torch.Tensor], teacher_features: dict[str, torch.Tensor]) -> None:
        self.embed_student = Embed(student_features[self.student_layer][0].numel(), self.feature_dim)
        self.embed_teacher = Embed(teacher_features[self.teacher_layer][0].numel(), self.feature_dim)

    def attach_data(self, datamodule: Any) -> None:
        check_sample_labels("crd", datamodule)
        assert isinstance(self.embed_student, Embed), "build() makes the embeddings before the data is attached"
        labels = datamodule.train_labels.to(self.embed_student.linear.weight.device)
        num_data = len(labels)
        order = torch.argsort(labels, stable=True)
        counts = torch.bincount(labels)
        # Samples sorted by class: class c occupies order[offsets[c] : offsets[c] + counts[c]].
        self.register_buffer("order", order, persistent=False)
        self.register_buffer("counts", counts, persistent=False)
        self.register_buffer("offsets", torch.cumsum(counts, 0) - counts, persistent=False)
        if getattr(self, "memory_student", None) is None or len(self.memory_student) != num_data:
            bound = 1.0 / math.sqrt(self.feature_dim / 3)  # RepDistiller's initial range
            device = labels.device
            self.register_buffer("memory_student", (torch.rand(num_data, self.feature_dim, device=device) * 2 - 1)
                                 * bound)
            self.register_buffer("memory_teacher", (torch.rand(num_data, self.feature_dim, device=device) * 2 - 1)
                                 * bound)
            self.register_buffer("normalizers", torch.full((2,), -1.0, device=device))

    def contrast_indices(self, indices: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """b x (K + 1) sample indices: the positive first, then K drawn uniformly from the other classes."""
        count, offset = self.counts[targets].unsqueeze(1), self.offsets[targets].unsqueeze(1)
        draws = (torch.rand(len(targets), self.negatives, device=targets.device) * (len(self.order) - count)).long()
        negatives = self.order[draws + (draws >= offset) * count]  # skip the anchor's own class
        if self.mode == "exact":
            positives = indices.unsqueeze(1)
        else:
            positives = self.order[offset + (torch.rand_like(count, dtype=torch.float) * count).long()]
        return torch.cat([positives, negatives], dim=1)

    def forward(self, batch: DistillBatch) -> torch.Tensor:
        if batch.indices is None or getattr(self, "memory_student", None) is None:
            raise ConfigError("loss.crd needs the training samples' indices and its memory banks; they come with a "
                              f"data module that has train_labels ({', '.join(with_sample_labels())}) when training "
                              "starts")
        student, teacher = self.pair(batch)
        v_student, v_teacher = self.embed_student(student), self.embed_teacher(teacher)
        contrast = self.contrast_indices(batch.indices, batch.targets)
        scores_student = contrast_scores(v_student, self.memory_teacher, contrast, self.temperature)
        scores_teacher = contrast_scores(v_teacher, self.memory_student, contrast, self.temperature)
        num_data = len(self.memory_student)
        if self.normalizers[0] < 0:  # fixed on the first batch, then kept (and checkpointed)
            self.normalizers.copy_(torch.stack([scores_student.mean(), scores_teacher.mean()]).detach() * num_data)
        loss = (nce_loss(scores_student / self.normalizers[0], num_data)
                + nce_loss(scores_teacher / self.normalizers[1], num_data))
        momentum_update(self.memory_student, batch.indices, v_student, self.momentum)
        momentum_update(self.memory_teacher, batch.indices, v_teacher, self.momentum)
        return loss
