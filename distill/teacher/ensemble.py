"""Several teachers read as one (``teachers=[...]``): the student's module sees a single frozen network.

``TeacherEnsemble.forward`` returns the aggregate logits, so loss terms, the teacher-output cache and the
metrics need no change; each teacher stays addressable as ``teachers.<i>`` (its logits, for per-teacher
terms such as ``kd@1``) and ``teachers.<i>.<layer>`` (its features), through the usual forward hooks.
The aggregation mode, the weights and the temperature are buffers: they are part of the ensemble's
weights fingerprint, so the teacher-output cache keeps one entry per aggregate.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import nn

from distill.config import fit_config
from distill.config.schemes import ensemble_temperature, teacher_members
from distill.report import ReportEntry
from distill.teacher.obtain import obtain_teacher
from teachers import build_teacher

Aggregate = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def mean_probabilities(logits: torch.Tensor, weights: torch.Tensor, temperature: torch.Tensor) -> torch.Tensor:
    """``T * log(sum_i w_i softmax(z_i / T))``: logits whose softmax at ``T`` is the weighted mean of the
    teachers' softened distributions, so a KD term (which applies ``softmax(z / T)``) reads exactly that mean.

    Returned as logits, not probabilities, because every logit term and metric expects logits; computed
    with log-sum-exp so that a confident teacher's near-zero probabilities do not underflow.
    """
    log_probs = F.log_softmax(logits / temperature, dim=-1)
    return temperature * torch.logsumexp(log_probs + weights.log().view(-1, 1, 1), dim=0)


def mean_logits(logits: torch.Tensor, weights: torch.Tensor, temperature: torch.Tensor) -> torch.Tensor:
    """``sum_i w_i z_i``: the weighted mean of the teachers' logits (temperature plays no part)."""
    return (weights.view(-1, 1, 1) * logits).sum(dim=0)


AGGREGATES: dict[str, Aggregate] = {"mean_probs": mean_probabilities, "mean_logits": mean_logits}


class TeacherEnsemble(nn.Module):
    """Frozen teachers whose forward pass is one aggregate of their logits (see ``AGGREGATES``).

    ``weights`` (default: equal) are normalised to sum to 1; ``temperature`` is the KD term's, at which
    ``mean_probs`` averages the distributions.
    """

    # Buffers registered in __init__.
    weights: torch.Tensor
    temperature: torch.Tensor
    aggregate_id: torch.Tensor

    def __init__(self, teachers: Sequence[nn.Module], aggregate: str = "mean_probs",
                 weights: Sequence[float] | None = None, temperature: float = 1.0) -> None:
        super().__init__()
        self.teachers = nn.ModuleList(teachers)
        self.aggregate = aggregate
        self.combine = AGGREGATES[aggregate]
        values = torch.tensor(list(weights) if weights else [1.0] * len(teachers), dtype=torch.float32)
        self.register_buffer("weights", values / values.sum())
        self.register_buffer("temperature", torch.tensor(float(temperature)))
        self.register_buffer("aggregate_id", torch.tensor(list(aggregate.encode()), dtype=torch.uint8))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        logits = torch.stack([teacher(images) for teacher in self.teachers])
        return self.combine(logits.float(), self.weights, self.temperature).to(logits.dtype)


def build_teachers(cfg: DictConfig, num_classes: int, in_chans: int, input_shape: tuple[int, ...]) -> nn.Module:
    """The run's teacher: ``cfg.teacher``, or the ensemble of ``cfg.teachers`` when that list is set."""
    members = teacher_members(cfg)
    if members is None:
        return build_teacher(cfg.teacher, num_classes, in_chans, input_shape)
    teachers = [build_teacher(member, num_classes, in_chans, input_shape) for member in members]
    return TeacherEnsemble(teachers, cfg.ensemble.aggregate, cfg.ensemble.weights, ensemble_temperature(cfg))


def obtain_teachers(cfg: DictConfig, teacher: nn.Module, datamodule: Any, output_dir: Path) -> dict[str, Any]:
    """``obtain_teacher`` for each member of an ensemble (each cached by its own key), or for the one teacher."""
    if not isinstance(teacher, TeacherEnsemble):
        return obtain_teacher(cfg, teacher, datamodule, output_dir)
    member_cfgs = teacher_members(cfg)
    assert member_cfgs is not None, "an ensemble is built from cfg.teachers"
    members = []
    for index, (member_cfg, member) in enumerate(zip(member_cfgs, teacher.teachers)):
        member_run = fit_config(cfg, teacher=member_cfg)
        members.append(obtain_teacher(member_run, member, datamodule, output_dir / "teachers" / str(index)))
    teacher.eval()
    names = [member["architecture"] for member in members]
    return {"architecture": f"ensemble({','.join(names)})", "source": f"ensemble of {len(members)} teachers",
            "aggregate": teacher.aggregate, "weights": teacher.weights.tolist(),
            "trained_now": any(member.get("trained_now") for member in members),
            "members": [{k: v for k, v in member.items() if k != "fit"} for member in members]}


def teacher_report_entries(cfg: DictConfig, teacher: nn.Module) -> list[ReportEntry]:
    """The report's teacher rows: the ensemble (what the student is compared with) and every member."""
    if not isinstance(teacher, TeacherEnsemble):
        return [ReportEntry("teacher", cfg.teacher.name, teacher)]
    member_cfgs = teacher_members(cfg)
    assert member_cfgs is not None, "an ensemble is built from cfg.teachers"
    names = [member["name"] for member in member_cfgs]
    rows = [ReportEntry("teacher", f"ensemble({','.join(names)})", teacher,
                        label=f"teacher: ensemble of {len(names)} ({teacher.aggregate})")]
    rows += [ReportEntry(f"teacher_{i}", name, member, label=f"teacher {i}: {name}")
             for i, (name, member) in enumerate(zip(names, teacher.teachers))]
    return rows
