"""Activation-boundary distillation: the student's pre-activations learn which neurons the teacher turns on."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from distill.losses.adapters import make_adapter
from distill.losses.base import DistillBatch, check_stages, sum_terms
from distill.losses.features import LayerPairsTerm
from distill.losses.maps import require_maps
from distill.losses.registry import register_loss


def activation_boundary_loss(student: torch.Tensor, teacher: torch.Tensor, margin: float = 1.0) -> torch.Tensor:
    """Heo et al. (2019), "Knowledge Transfer via Distillation of Activation Boundaries Formed by Hidden Neurons".

    The alternative (squared-hinge) loss on pre-activations, summed over elements and divided by the batch:
    ``sum [(s + m)^2 if s > -m and t <= 0] + [(s - m)^2 if s <= m and t > 0]``, then ``/ b``: a neuron the
    teacher keeps off must be below ``-m`` in the student, one it turns on above ``m``.
    """
    off = (student > -margin) & (teacher <= 0)
    on = (student <= margin) & (teacher > 0)
    loss = (student + margin).pow(2) * off + (student - margin).pow(2) * on
    return loss.sum() / student.shape[0]


def ab_loss(students: Sequence[torch.Tensor], teachers: Sequence[torch.Tensor], margin: float = 1.0) -> torch.Tensor:
    """RepDistiller's ``ABLoss``: layer l of n weighted ``2^(l - n + 1)`` (the deepest 1, halving towards the input),
    and the sum scaled by ``3 / 1000``, the reference's constant."""
    n = len(students)
    return sum_terms(2.0 ** (index - n + 1) * activation_boundary_loss(s, t, margin)
                     for index, (s, t) in enumerate(zip(students, teachers))) * 3 / 1000


@register_loss("ab")
class ActivationBoundaryLoss(LayerPairsTerm):
    """AB on pre-activation layers (``layer1:pre_act``, ...), a connector (1x1 conv + BN) where shapes differ.

    As in RepDistiller, AB is an initialisation stage: ``hint_only_epochs`` (30) epochs on AB alone, then the
    term drops out (``main_stage: false``) and the other terms train from that initialisation.
    """

    def __init__(self, weight: float, student_layers: Sequence[str], teacher_layers: Sequence[str],
                 margin: float = 1.0, hint_only_epochs: int = 30, main_stage: bool = False) -> None:
        super().__init__("ab", weight, student_layers, teacher_layers)
        self.margin = float(margin)
        self.hint_only_epochs, self.main_stage = int(hint_only_epochs), bool(main_stage)
        check_stages("ab", self.hint_only_epochs, self.main_stage)
        self.connectors = nn.ModuleList()

    def build(self, student_features: dict[str, torch.Tensor], teacher_features: dict[str, torch.Tensor]) -> None:
        require_maps("ab", {s: student_features[s] for s in self.student_layers}, "student")
        require_maps("ab", {t: teacher_features[t] for t in self.teacher_layers}, "teacher")
        self.connectors = nn.ModuleList(make_adapter(student_features[s], teacher_features[t])
                                        for s, t in zip(self.student_layers, self.teacher_layers))

    def forward(self, batch: DistillBatch) -> torch.Tensor:
        pairs = self.pairs(batch)
        students = [connector(student) for connector, (student, _) in zip(self.connectors, pairs)]
        return ab_loss(students, [teacher for _, teacher in pairs], self.margin)
