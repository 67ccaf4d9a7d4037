"""Curriculum temperature KD: a learnable temperature, global or per sample, trained adversarially through gradient
reversal."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from distill.errors import ConfigError
from distill.feature_taps import unwrap
from distill.losses.base import DistillBatch, LossTerm
from distill.losses.logits import kd_loss, standardize_logits
from distill.losses.registry import register_loss


class GradientReversal(torch.autograd.Function):
    """Identity forward; backward multiplies the gradient by ``scale`` (Ganin & Lempitsky 2015).

    With the negative ``scale`` of CTKD's schedule the temperature ascends the KD loss while the student
    descends it.
    """

    # ctx is Any: torch types it as FunctionCtx, which declares no room for the attributes a Function keeps on it.
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.scale = scale
        return x.clone()

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return ctx.scale * grad, None


def cosine_lambda(epoch: int, epochs: int, start: float = 0.0, end: float = -1.0) -> float:
    """CTKD's curriculum: ``lambda`` goes from ``start`` to ``end`` along half a cosine over ``epochs`` epochs.

    ``end + (start - end) (cos(pi min(e, E) / E) + 1) / 2`` for the 1-based epoch e (the reference's loop).
    """
    step = min(max(epoch, 0), epochs)
    return end + (start - end) * (math.cos(step * math.pi / epochs) + 1) / 2


def ctkd_temperature(parameter: torch.Tensor, scale: float, min_temperature: float = 1.0,
                     temperature_range: float = 20.0) -> torch.Tensor:
    """Li et al. (2023), "Curriculum Temperature for Knowledge Distillation": ``T = T_min + T_range sigmoid(theta)``,
    theta behind a gradient-reversal layer of strength ``scale``."""
    return min_temperature + temperature_range * torch.sigmoid(GradientReversal.apply(parameter, scale))


def instance_kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                     temperatures: torch.Tensor) -> torch.Tensor:
    """Hinton KD with one temperature per sample: ``mean_i T_i² KL(softmax(t_i/T_i) ‖ softmax(s_i/T_i))``.

    The authors' instance-wise loop (CTKD README, ``KL_Loss`` summed over the batch, divided by its size);
    their ``+1e-7`` on the teacher's probabilities is left out, as in :func:`kd_loss`, which this equals
    when every ``T_i`` is the same.
    """
    scale = temperatures.unsqueeze(1)
    log_p_student = F.log_softmax(student_logits / scale, dim=1)
    log_p_teacher = F.log_softmax(teacher_logits / scale, dim=1)
    per_sample = F.kl_div(log_p_student, log_p_teacher, log_target=True, reduction="none").sum(dim=1)
    return (temperatures**2 * per_sample).mean()


class InstanceTemperature(nn.Module):
    """Per-sample theta from both networks' logits: ``Linear(2C, hidden) - ReLU - Linear(hidden, 1)`` on
    ``[teacher logits, student logits]`` (the reference's ``mlp_net(logit_t, logit_s, lambda)``).

    The paper describes a two-layer MLP on the two predictions; the authors published its code only as an
    archive outside their repository, so the hidden width is an option. The logits enter detached: only
    the MLP ascends the KD loss through the reversed gradient, the student never does.
    """

    def __init__(self, num_classes: int, hidden: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(2 * num_classes, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, 1))

    def forward(self, student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
        return self.mlp(torch.cat([teacher_logits.detach(), student_logits.detach()], dim=1)).squeeze(1)


MODES = ("global", "instance")


@register_loss("ctkd")
class CTKDLoss(LossTerm):
    """Hinton KD at a learned temperature (see :func:`ctkd_temperature`).

    ``mode: global``: one theta for all samples, starting at 1 (T = 15.6). ``mode: instance``: theta per sample
    from :class:`InstanceTemperature` (``hidden`` units), built once the number of classes is known
    (:meth:`attach`), and :func:`instance_kd_loss`. The reversal strength follows :func:`cosine_lambda` from
    ``lambda_start`` (0) to ``lambda_end`` (-1) over ``lambda_epochs`` (10), as the authors' CIFAR script. The
    temperature's parameters train with the student (same optimizer, as in the reference) and are saved in
    checkpoints. ``standardize`` z-scores both logits first (Sun et al. 2024).
    """

    def __init__(self, weight: float = 0.9, min_temperature: float = 1.0, temperature_range: float = 20.0,
                 lambda_start: float = 0.0, lambda_end: float = -1.0, lambda_epochs: int = 10,
                 standardize: bool = False, mode: str = "global", hidden: int = 128) -> None:
        super().__init__(weight)
        if min_temperature <= 0 or temperature_range < 0 or lambda_epochs < 1:
            raise ConfigError(f"loss.ctkd needs min_temperature > 0, temperature_range >= 0 and lambda_epochs >= 1; "
                              f"got {min_temperature}, {temperature_range} and {lambda_epochs}")
        if mode not in MODES or hidden < 1:
            raise ConfigError(f"loss.ctkd.mode={mode!r}, hidden={hidden}: choose mode global (one temperature) or "
                              "instance (an MLP's temperature per sample) and hidden >= 1")
        self.min_temperature, self.temperature_range = float(min_temperature), float(temperature_range)
        self.lambda_start, self.lambda_end = float(lambda_start), float(lambda_end)
        self.lambda_epochs = int(lambda_epochs)
        self.standardize = bool(standardize)
        self.mode, self.hidden = mode, int(hidden)
        if mode == "global":
            self.theta = nn.Parameter(torch.ones(()))
        self.instance_temperature: InstanceTemperature | None = None

    def attach(self, student: nn.Module, teacher: nn.Module | None) -> None:
        if self.mode != "instance" or self.instance_temperature is not None:
            return
        num_classes = getattr(unwrap(student), "num_classes", None)
        if not isinstance(num_classes, int) or num_classes < 1:
            raise ConfigError("loss.ctkd.mode=instance sizes its MLP from the student's num_classes, which this "
                              f"student ({type(unwrap(student)).__name__}) does not say; use a timm model")
        self.instance_temperature = InstanceTemperature(num_classes, self.hidden).to(
            next(student.parameters()).device)

    def reversal_scale(self, epoch: int) -> float:
        return cosine_lambda(epoch + 1, self.lambda_epochs, self.lambda_start, self.lambda_end)

    def current_temperature(self, epoch: int, student_logits: torch.Tensor | None = None,
                            teacher_logits: torch.Tensor | None = None) -> torch.Tensor:
        """The global temperature (a scalar), or one per sample of the given logits in instance mode."""
        if self.mode == "global":
            theta = self.theta
        else:
            assert self.instance_temperature is not None, "attach() builds the MLP in instance mode"
            theta = self.instance_temperature(student_logits, teacher_logits)
        return ctkd_temperature(theta, self.reversal_scale(epoch), self.min_temperature, self.temperature_range)

    def forward(self, batch: DistillBatch) -> torch.Tensor:
        student, teacher = batch.student_logits, batch.teacher_logits
        assert teacher is not None, "ctkd needs a teacher, so its batches carry the teacher's logits"
        if self.standardize:
            student, teacher = standardize_logits(student), standardize_logits(teacher)
        if self.mode == "global":
            return kd_loss(student, teacher, self.current_temperature(batch.epoch))
        return instance_kd_loss(student, teacher, self.current_temperature(batch.epoch, student, teacher))

    def extra_repr(self) -> str:
        return f"weight={self.weight}, mode={self.mode}"
