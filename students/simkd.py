"""SimKD's deployed network: a student backbone, a projector to the teacher's width, the teacher's classifier.

Chen et al. (CVPR 2022), "Knowledge Distillation with the Reused Teacher Classifier": the student's last
feature map goes through a bottleneck projector to the teacher's channel count and then through the
teacher's own (frozen) global pooling and linear classifier. ``simkd_student`` rebuilds the trained
network with ``timm.create_model`` from the exported kwargs; the classifier's weights are in its state dict.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, cast

import timm
import torch
import torch.nn.functional as F
from timm.models import register_model
from torch import nn

from students.common import build_registered

# The module whose output is the projected student feature, the one SimKD's loss compares with the teacher's.
PROJECTOR = "projector"


def simkd_projector(student_channels: int, teacher_channels: int, factor: int = 2) -> nn.Sequential:
    """conv1x1-BN-ReLU, conv3x3-BN-ReLU at ``teacher_channels // factor``, conv1x1-BN-ReLU to ``teacher_channels``.

    The reference's ``SimKD.transfer`` (DefangChen/SimKD models/util.py): a bottleneck that keeps the extra
    parameters small; its 3x3 conv is dense (the depthwise variant is commented out there).
    """
    hidden = teacher_channels // factor
    if factor < 1 or hidden < 1:
        raise ValueError(f"SimKD's projector needs 1 <= factor <= teacher channels ({teacher_channels}), got {factor}")
    return nn.Sequential(
        nn.Conv2d(student_channels, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU(inplace=True),
        nn.Conv2d(hidden, hidden, 3, padding=1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU(inplace=True),
        nn.Conv2d(hidden, teacher_channels, 1, bias=False), nn.BatchNorm2d(teacher_channels), nn.ReLU(inplace=True),
    )


class SimKDStudent(nn.Module):
    """``head(mean_hw(projector(pool(backbone.forward_features(x)))))``.

    ``pool_to`` is the teacher's feature size when the student's map is larger: the reference averages
    the larger of the two maps down to the smaller one's size before comparing them, and at inference too.
    ``backbone`` is a timm model whose own classifier has been removed (``reset_classifier(0)``).
    """

    def __init__(self, backbone: nn.Module, projector: nn.Sequential, head: nn.Linear,
                 pool_to: Sequence[int] | None = None) -> None:
        super().__init__()
        self.backbone = backbone
        self.projector = projector
        self.head = head
        self.pool_to: tuple[int, int] | None = None
        if pool_to:
            height, width = pool_to
            self.pool_to = (height, width)
        self.num_classes = head.out_features
        self.num_features = self.head_hidden_size = head.in_features
        # The backbone's stages, then the projected feature: ``@N`` layer names keep working on the wrapper.
        info = getattr(backbone, "feature_info", None) or []
        entries = info.get_dicts() if hasattr(info, "get_dicts") else info
        self.feature_info = [{**entry, "module": f"backbone.{entry['module']}"} for entry in entries
                             if "module" in entry] + [dict(num_chs=head.in_features, module=PROJECTOR)]

    def get_classifier(self) -> nn.Module:
        return self.head

    def fixed_width_layers(self) -> list[nn.Module]:
        """Layers whose output width must survive channel pruning: the projector's last conv feeds the teacher's
        classifier, which takes exactly its channels."""
        return [self.projector[-3]]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        # A timm model's method; nn.Module types unknown attributes as Tensor | Module.
        feature = cast(Callable[[torch.Tensor], torch.Tensor], self.backbone.forward_features)(x)
        if self.pool_to is not None:
            feature = F.adaptive_avg_pool2d(feature, self.pool_to)
        return self.projector(feature)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        pooled = x.mean(dim=(2, 3))
        return pooled if pre_logits else self.head(pooled)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def build_simkd_student(student: str, student_channels: int, teacher_channels: int, num_classes: int,
                        in_chans: int, student_kwargs: dict[str, Any] | None = None, factor: int = 2,
                        pool_to: list[int] | None = None) -> SimKDStudent:
    backbone = timm.create_model(student, num_classes=num_classes, in_chans=in_chans, **(student_kwargs or {}))
    cast(Callable[[int], None], backbone.reset_classifier)(0)  # a timm model's method (see forward_features)
    return SimKDStudent(backbone, simkd_projector(student_channels, teacher_channels, factor),
                        nn.Linear(teacher_channels, num_classes), pool_to)


@register_model
def simkd_student(pretrained: bool = False, **kwargs: Any) -> SimKDStudent:
    """A SimKD-trained student: ``student`` (a timm name) with ``student_kwargs``, the channel counts of its
    last feature map and of the teacher's classifier input, ``factor`` and ``pool_to`` as trained."""
    return build_registered(build_simkd_student, "simkd_student", pretrained, **kwargs)
