"""The LightningModule that trains a network, with or without a frozen teacher.

Distillation, a teacher trained alone and the undistilled student baseline are the same code: without
a teacher, only terms that need none (cross-entropy) are allowed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import lightning as L
import torch
from torch import nn
from torchmetrics.classification import MulticlassAccuracy

from distill.errors import ConfigError
from distill.features import FeatureTaps
from distill.losses import DistillBatch, LossTerm
from distill.reliability.errors import DivergenceError
from distill.teacher_outputs import CachedTeacherOutputs

log = logging.getLogger("distill")

OptimizerFactory = Callable[..., torch.optim.Optimizer]
SchedulerFactory = Callable[..., Any]


def eval_metrics(num_classes: int, with_teacher: bool) -> nn.ModuleDict:
    """Metrics of one evaluation split. Each reads (student_logits, teacher_logits, targets) differently."""
    metrics: dict[str, nn.Module] = {"acc_top1": MulticlassAccuracy(num_classes, top_k=1, average="micro")}
    if num_classes > 5:
        metrics["acc_top5"] = MulticlassAccuracy(num_classes, top_k=5, average="micro")
    if with_teacher:
        metrics["teacher_acc_top1"] = MulticlassAccuracy(num_classes, top_k=1, average="micro")
        # Top-1 accuracy of the student against the teacher's top-1 labels: how often the two agree.
        metrics["agreement"] = MulticlassAccuracy(num_classes, top_k=1, average="micro")
    return nn.ModuleDict(metrics)


def metric_inputs(name: str, student_logits: torch.Tensor, teacher_logits: torch.Tensor | None,
                  targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if name == "teacher_acc_top1":
        return teacher_logits, targets
    if name == "agreement":
        return student_logits, teacher_logits.argmax(1)
    return student_logits, targets


def unpack(batch: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """(images, targets, sample indices or None): in-memory sets also yield each sample's index."""
    images, targets, *rest = batch
    return images, targets, (rest[0] if rest else None)


class DistillationModule(L.LightningModule):
    """Trains ``student`` on a weighted sum of ``loss_terms``; ``teacher`` (optional) stays frozen.

    The teacher has no gradients, is always in eval mode (so dropout is off and BatchNorm statistics
    never change, whatever Lightning does to train/eval modes around validation) and is not saved in
    checkpoints: it is rebuilt from its own source, which keeps checkpoints student-sized.
    """

    def __init__(
        self,
        student: nn.Module,
        loss_terms: nn.ModuleDict,
        optimizer: OptimizerFactory,
        num_classes: int,
        input_shape: tuple[int, ...],
        teacher: nn.Module | None = None,
        scheduler: SchedulerFactory | None = None,
        teacher_outputs: CachedTeacherOutputs | None = None,
        channels_last: bool = False,
        compile_student: bool = False,
        on_non_finite: str = "error",
        max_skipped_batches: int | None = None,
    ) -> None:
        super().__init__()
        if on_non_finite not in ("error", "skip"):
            raise ConfigError(f"guard.on_non_finite={on_non_finite!r}; choose error or skip")
        self.on_non_finite, self.max_skipped_batches = on_non_finite, max_skipped_batches
        self.skipped_batches = 0  # batches whose loss was not finite (guard.on_non_finite=skip); in checkpoints
        needing_teacher = [name for name, term in loss_terms.items() if term.needs_teacher]
        if teacher is None and needing_teacher:
            raise ConfigError(f"loss term(s) {needing_teacher} need a teacher, but this stage trains without one")
        self.student = student
        self.teacher = teacher
        self.loss_terms = loss_terms
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.num_classes = num_classes
        # Cached teacher logits, looked up by sample index; the teacher still runs for feature terms.
        self.teacher_outputs = teacher_outputs
        self.student_taps = FeatureTaps(student, [n for t in loss_terms.values() for n in t.student_layers], "student")
        self.teacher_taps = None
        if teacher is not None:
            teacher.requires_grad_(False)
            teacher.eval()
            teacher.to(next(student.parameters()).device)  # one device for the dry run (Lightning moves both)
            self.teacher_taps = FeatureTaps(teacher, [n for t in loss_terms.values() for n in t.teacher_layers],
                                            "teacher")
        self.channels_last = channels_last and len(input_shape) == 3
        if self.channels_last:
            student.to(memory_format=torch.channels_last)
            if teacher is not None:
                teacher.to(memory_format=torch.channels_last)
        # The compiled student is kept outside the module tree, so checkpoints keep plain ``student.`` keys.
        object.__setattr__(self, "student_forward", torch.compile(student) if compile_student else student)
        self._build_adapters(input_shape)
        self.train_acc = MulticlassAccuracy(num_classes, top_k=1, average="micro")
        self.eval_metrics = nn.ModuleDict(
            {split: eval_metrics(num_classes, teacher is not None) for split in ("val", "test")}
        )

    def _build_adapters(self, input_shape: tuple[int, ...]) -> None:
        """Dry run on a small batch so that loss terms can size their adapters before the optimizer exists."""
        example = torch.zeros(2, *input_shape, device=next(self.student.parameters()).device)
        was_training = self.student.training
        self.student.eval()
        with torch.no_grad():
            outputs = self._forward(example)
        self.student.train(was_training)
        for term in self.loss_terms.values():
            term.attach(self.student, self.teacher)
            term.build(outputs.student_features, outputs.teacher_features)

    def remove_hooks(self) -> None:
        """Detach the feature hooks from the networks (after a dry run that only checked the config)."""
        self.student_taps.remove()
        if self.teacher_taps is not None:
            self.teacher_taps.remove()

    def train(self, mode: bool = True) -> DistillationModule:
        super().train(mode)
        if self.teacher is not None:
            self.teacher.eval()
        return self

    def setup(self, stage: str) -> None:
        # Lightning calls this after the data module's setup and before it restores a resumed checkpoint.
        if stage == "fit" and self._trainer is not None:
            for term in self.loss_terms.values():
                term.attach_data(self.trainer.datamodule)

    def on_fit_start(self) -> None:
        # Lightning keeps each submodule's train/eval mode as it finds it; start from a known state.
        self.train()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.student(images)

    def _teacher_outputs(self, images: torch.Tensor, indices: torch.Tensor | None,
                         split: str) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Teacher logits and features: looked up when cached (no feature terms then), else a live forward."""
        if self.teacher_outputs is not None and indices is not None:
            return self.teacher_outputs.lookup(split, indices), {}
        with torch.no_grad():
            logits = self.teacher(images)
        return logits, self.teacher_taps.pop()

    def _prepare_images(self, images: torch.Tensor) -> torch.Tensor:
        return images.contiguous(memory_format=torch.channels_last) if self.channels_last else images

    def _forward(self, images: torch.Tensor, targets: torch.Tensor | None = None,
                 indices: torch.Tensor | None = None) -> DistillBatch:
        images = self._prepare_images(images)
        student_logits = self.student_forward(images)
        batch = DistillBatch(
            targets=targets if targets is not None else student_logits.argmax(1),
            student_logits=student_logits,
            student_features=self.student_taps.pop(),
            epoch=self.current_epoch if self._trainer is not None else 0,
            indices=indices,
        )
        if self.teacher is not None:
            batch.teacher_logits, batch.teacher_features = self._teacher_outputs(images, indices, "train")
        return batch

    def active_terms(self) -> dict[str, LossTerm]:
        """All terms, except during a FitNet-style hint-only stage, when only the hint terms train.

        After that stage, terms that belong to it alone (``main_stage`` false: AB's and FSP's init training) drop out.
        """
        hint_only = {name: term for name, term in self.loss_terms.items()
                     if getattr(term, "hint_only_epochs", 0) > self.current_epoch}
        return hint_only or {name: term for name, term in self.loss_terms.items() if getattr(term, "main_stage", True)}

    def training_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> torch.Tensor | None:
        images, targets, indices = unpack(batch)
        outputs = self._forward(images, targets, indices)
        values = {name: term(outputs) for name, term in self.active_terms().items()}
        total = sum(self.loss_terms[name].weight * value for name, value in values.items())
        # One host sync per step (a GPU waits here): the price of never applying a NaN step.
        if not bool(torch.isfinite(total)):
            return self._non_finite(values, total)
        for name, value in values.items():
            # Terms per epoch, the total per step too: each step-level log costs time on small models.
            self.log(f"train/loss/{name}", value, on_step=False, on_epoch=True)
        self.train_acc(outputs.student_logits.detach(), targets)
        self.log("train/loss", total, on_step=True, on_epoch=True, prog_bar=True)
        self.log("train/acc_top1", self.train_acc, on_step=False, on_epoch=True, prog_bar=True)
        return total

    def _non_finite(self, values: dict[str, torch.Tensor], total: torch.Tensor) -> None:
        """Stop the run (``on_non_finite='error'``) or skip this batch: returning None skips the optimizer step."""
        term = next((name for name, value in values.items() if not bool(torch.isfinite(value))), None)
        label = f"term '{term}'" if term else "the weighted total"
        value = float((values[term] if term else total).detach())
        if self.on_non_finite == "skip":
            self.skipped_batches += 1
            log.warning("skipped batch %d of epoch %d: %s = %s (%d skipped so far)", self.global_step,
                        self.current_epoch, label, value, self.skipped_batches)
            if self.max_skipped_batches is not None and self.skipped_batches > self.max_skipped_batches:
                raise DivergenceError(f"{label} (more than guard.max_skipped_batches={self.max_skipped_batches} "
                                      "batches skipped)", value, self.current_epoch, self.global_step)
            return None
        raise DivergenceError(label, value, self.current_epoch, self.global_step)

    def _eval_step(self, batch: tuple[torch.Tensor, ...], split: str) -> None:
        images, targets, indices = unpack(batch)
        images = self._prepare_images(images)
        student_logits = self.student_forward(images)
        self.student_taps.pop()
        teacher_logits = None
        if self.teacher is not None:
            teacher_logits, _ = self._teacher_outputs(images, indices, split)
        self.log(f"{split}/loss/ce", nn.functional.cross_entropy(student_logits, targets), on_epoch=True)
        for name, metric in self.eval_metrics[split].items():
            metric(*metric_inputs(name, student_logits, teacher_logits, targets))
            self.log(f"{split}/{name}", metric, on_step=False, on_epoch=True, prog_bar=split == "val")

    def validation_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def test_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def configure_optimizers(self) -> Any:
        # Adapters inside loss terms train with the student; the teacher has no trainable parameters.
        parameters = [p for p in self.student.parameters()] + [p for p in self.loss_terms.parameters()]
        optimizer = self.optimizer_factory(params=parameters)
        if self.scheduler_factory is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": self.scheduler_factory(optimizer),
                                                         "interval": "epoch"}}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["skipped_batches"] = self.skipped_batches
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if not k.startswith("teacher.")}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.skipped_batches = int(checkpoint.get("skipped_batches", 0))
        if self.teacher is not None:
            checkpoint["state_dict"].update({f"teacher.{k}": v for k, v in self.teacher.state_dict().items()})
