"""``<term>@<i>``: a loss term that reads teacher ``i`` of an ensemble (``teachers=[...]``) instead of the aggregate.

``kd@1`` is KD against the logits of ``teachers.1``; ``fitnet@0`` with ``teacher_layer: layer2`` reads
``teachers.0.layer2``. Both come through the usual forward hooks on the ensemble, so the model is not
edited and the inner term is the ordinary one.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch
from torch import nn

from distill.errors import ConfigError
from distill.losses.base import DistillBatch, LossTerm


class PerTeacherTerm(LossTerm):
    """``term`` with teacher logits and features taken from member ``index`` of a ``TeacherEnsemble``."""

    def __init__(self, name: str, term: LossTerm, index: int) -> None:
        super().__init__(term.weight)
        staged = [layer for layer in term.teacher_layers if layer.startswith("@")]
        if staged:
            raise ConfigError(f"loss.{name}: teacher layer '{staged[0]}' picks a feature_info stage, which an "
                              f"ensemble has not; name teacher {index}'s layer by its path (e.g. layer2)")
        self.term, self.prefix = term, f"teachers.{index}"
        self.needs_teacher, self.needs_sample_labels = term.needs_teacher, term.needs_sample_labels
        self.hint_only_epochs, self.main_stage = term.hint_only_epochs, term.main_stage
        self.student_layers = term.student_layers
        # The member's own output (its logits) first, then its layers the inner term reads.
        self.teacher_layers = (self.prefix, *(f"{self.prefix}.{layer}" for layer in term.teacher_layers))

    def _own(self, teacher_features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {layer: teacher_features[f"{self.prefix}.{layer}"] for layer in self.term.teacher_layers}

    def attach(self, student: nn.Module, teacher: nn.Module | None) -> None:
        self.term.attach(student, teacher.get_submodule(self.prefix) if teacher is not None else None)

    def build(self, student_features: dict[str, torch.Tensor], teacher_features: dict[str, torch.Tensor]) -> None:
        self.term.build(student_features, self._own(teacher_features))

    def attach_data(self, datamodule: Any) -> None:
        self.term.attach_data(datamodule)

    def forward(self, batch: DistillBatch) -> torch.Tensor:
        return self.term(replace(batch, teacher_logits=batch.teacher_features[self.prefix],
                                 teacher_features=self._own(batch.teacher_features)))


def teacher_index(name: str, suffix: str) -> int:
    """The member index after '@' in a term's name (``kd@1`` -> 1)."""
    if not suffix.isdigit():
        raise ConfigError(f"loss '{name}': the part after '@' is a teacher's index in teachers=[...] (0, 1, ...), "
                          f"e.g. kd@0")
    return int(suffix)
