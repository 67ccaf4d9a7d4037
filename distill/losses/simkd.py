"""SimKD: the student learns the teacher's last feature map through a projector and predicts with the teacher's
own classifier (Chen et al., CVPR 2022, "Knowledge Distillation with the Reused Teacher Classifier")."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn

from distill.errors import ConfigError
from distill.feature_taps import FeatureTaps, unwrap
from distill.losses.base import DistillBatch, LossTerm, WrappedStudent
from distill.losses.maps import pool_to
from distill.losses.registry import register_loss
from distill.models import classifier_name
from students.simkd import PROJECTOR, SimKDStudent, simkd_projector


def simkd_loss(projected_student: torch.Tensor, teacher_feature: torch.Tensor) -> torch.Tensor:
    """``mean_{b,c,h,w} (P(F_s) − F_t)²``, the reference's ``nn.MSELoss`` between the projected student map and
    the teacher's; a larger teacher map is average-pooled to the student's size first (the reference's
    "spatial dimension alignment"; a larger student map is pooled inside :class:`SimKDStudent`)."""
    return F.mse_loss(projected_student, pool_to(teacher_feature, projected_student.shape[-2:]))


def _feature_map(model: nn.Module, layer: str, input_shape: tuple[int, ...], role: str) -> torch.Tensor:
    """The output of ``layer`` (or, for ``forward_features``, of the whole trunk) on two zero images."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            example = torch.zeros(2, *input_shape, device=next(model.parameters()).device)
            if layer == "forward_features":
                # A method of timm models (the caller checks); nn.Module types unknown attributes as Tensor | Module.
                return cast(Callable[[torch.Tensor], torch.Tensor], model.forward_features)(example)
            taps = FeatureTaps(model, [layer], role)
            try:
                model(example)
            finally:
                taps.remove()
            return taps.pop()[layer]
    finally:
        model.train(was_training)


def _teacher_classifier(teacher: nn.Module, teacher_name: str) -> tuple[str, nn.Linear]:
    path = classifier_name(unwrap(teacher))
    head = unwrap(teacher).get_submodule(path) if path else None
    if not path or not isinstance(head, nn.Linear):  # no path, no head
        found = (f"its classifier '{path}' is a {type(head).__name__}" if path
                 else f"it has no classifier (get_classifier of {type(unwrap(teacher)).__name__})")
        raise ConfigError(f"loss.simkd predicts with the teacher's classifier, but teacher '{teacher_name}': {found}, "
                          "not an nn.Linear on pooled features; use one teacher with a linear classifier (timm "
                          "ResNets, cifar_resnet*, small_cnn; not an ensemble)")
    return path, head


def reuse_teacher_classifier(student: nn.Module, student_name: str, student_kwargs: dict[str, Any],
                             teacher: nn.Module, teacher_name: str, teacher_layer: str, factor: int,
                             input_shape: tuple[int, ...]) -> WrappedStudent:
    """The student's trunk, a projector to the teacher's width and the teacher's classifier module itself.

    The classifier is shared, not copied: the teacher's weights may still be loaded from the cache or
    trained after this point, and the student must predict with the final ones. The distillation module
    freezes it together with the teacher; the export holds its weights like any other.
    """
    path, head = _teacher_classifier(teacher, teacher_name)
    teacher_map = _feature_map(teacher, teacher_layer, input_shape, "teacher")
    if teacher_map.ndim != 4 or teacher_map.shape[1] != head.in_features:
        raise ConfigError(
            f"loss.simkd.teacher_layer='{teacher_layer}' of teacher '{teacher_name}' gives shape "
            f"{tuple(teacher_map.shape[1:])}, but SimKD needs the (channels, height, width) map whose pooled "
            f"{head.in_features} channels feed its classifier '{path}'; set loss.simkd.teacher_layer to that layer "
            "(distill-layers +show=teacher lists the layers with their shapes)")
    if not callable(getattr(student, "forward_features", None)) or not callable(getattr(student, "reset_classifier",
                                                                                        None)):
        raise ConfigError(f"loss.simkd needs the student's last feature map, and student '{student_name}' has no "
                          "timm forward_features/reset_classifier; choose a timm or registered model")
    student_map = _feature_map(student, "forward_features", input_shape, "student")
    if student_map.ndim != 4:
        raise ConfigError(f"loss.simkd projects the student's last feature map, but student '{student_name}'."
                          f"forward_features gives shape {tuple(student_map.shape[1:])}, not (channels, height, "
                          "width); choose a convolutional student (cifar_resnet*, small_cnn, timm CNNs)")
    (s_height, s_width), (t_height, t_width) = student_map.shape[-2:], teacher_map.shape[-2:]
    pool_to = (min(s_height, t_height), min(s_width, t_width)) if s_height > t_height or s_width > t_width else None
    # The student's own classifier never runs: it is neither trained nor measured. reset_classifier is a method of
    # timm models (checked above); nn.Module types unknown attributes as Tensor | Module.
    cast(Callable[[int], None], student.reset_classifier)(0)
    projector = simkd_projector(student_map.shape[1], head.in_features, factor)
    model = SimKDStudent(student, projector, head, pool_to)
    kwargs = {"student": student_name,
              "student_kwargs": {k: v for k, v in student_kwargs.items() if k not in ("num_classes", "in_chans")},
              "student_channels": int(student_map.shape[1]), "teacher_channels": head.in_features,
              "factor": factor, "pool_to": list(pool_to) if pool_to else None}
    projector_params = sum(p.numel() for p in projector.parameters())
    head_params = sum(p.numel() for p in head.parameters())
    return WrappedStudent(
        model, "simkd_student", kwargs, label=f"simkd({student_name} + projector + {teacher_name}.{path})",
        note=(f"SimKD: the student predicts through a projector ({projector_params:,} parameters) and the teacher's "
              f"frozen classifier {teacher_name}.{path} ({head_params:,} parameters); its parameters, MACs and "
              "latency include both"))


@register_loss("simkd")
class SimKDLoss(LossTerm):
    """SimKD's only loss: :func:`simkd_loss` between the student's projector output and ``teacher_layer``.

    The term makes the run's student a :class:`SimKDStudent` (:meth:`wrap_student`): its logits come from
    the teacher's classifier, so evaluation, export and the efficiency report see the deployed network.
    ``factor`` is the projector's bottleneck (the reference's default 2).
    """

    def __init__(self, weight: float = 1.0, teacher_layer: str = "@-1", factor: int = 2) -> None:
        super().__init__(weight)
        if int(factor) != factor or factor < 1:
            raise ConfigError(f"loss.simkd.factor must be a whole number >= 1 (the projector's bottleneck), "
                              f"got {factor}")
        self.teacher_layer, self.factor = str(teacher_layer), int(factor)
        self.student_layers = (PROJECTOR,)
        self.teacher_layers = (self.teacher_layer,)

    def wrap_student(self, student: nn.Module, student_kwargs: dict[str, Any], student_name: str,
                     teacher: nn.Module, teacher_name: str, input_shape: tuple[int, ...]) -> WrappedStudent:
        return reuse_teacher_classifier(student, student_name, student_kwargs, teacher, teacher_name,
                                        self.teacher_layer, self.factor, input_shape)

    def attach(self, student: nn.Module, teacher: nn.Module | None) -> None:
        if not isinstance(unwrap(student), SimKDStudent):
            raise ConfigError("loss.simkd trains the student through the teacher's classifier, so the student must be "
                              "a SimKDStudent (distill-train builds it in stage=distill; elsewhere use "
                              "distill.losses.simkd.reuse_teacher_classifier)")

    def forward(self, batch: DistillBatch) -> torch.Tensor:
        return simkd_loss(batch.student_features[PROJECTOR], batch.teacher_features[self.teacher_layer])

    def extra_repr(self) -> str:
        return f"weight={self.weight}, teacher_layer={self.teacher_layer}, factor={self.factor}"
