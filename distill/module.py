"""The LightningModule that trains a network, with or without a frozen teacher.

Distillation, a teacher trained alone and the undistilled student baseline are the same code: without
a teacher, only terms that need none (cross-entropy) are allowed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import lightning as L
import torch
from torch import nn
from torchmetrics import MeanMetric, Metric
from torchmetrics.classification import MulticlassAccuracy

from distill.epoch_means import EpochMeans, log_epoch_means
from distill.errors import ConfigError, DivergenceError
from distill.feature_taps import FeatureTaps
from distill.losses import DistillBatch, LossTerm
from distill.reliability.guard import NonFiniteWatch
from distill.teacher.eval_logits import EvalTeacherLogits
from distill.teacher.stored_logits import CachedTeacherOutputs

log = logging.getLogger("distill")

OptimizerFactory = Callable[..., torch.optim.Optimizer]
SchedulerFactory = Callable[..., Any]


def eval_metrics(num_classes: int, with_teacher: bool) -> nn.ModuleDict:
    """Metrics of one evaluation split. Each reads (student_logits, teacher_logits, targets) differently."""
    # validate_args=False: the checks cost a torch.unique and a host sync per update on a GPU.
    def accuracy(top_k: int) -> MulticlassAccuracy:
        return MulticlassAccuracy(num_classes, top_k=top_k, average="micro", validate_args=False)

    metrics: dict[str, nn.Module] = {"acc_top1": accuracy(1)}
    if num_classes > 5:
        metrics["acc_top5"] = accuracy(5)
    if with_teacher:
        metrics["teacher_acc_top1"] = accuracy(1)
        # Top-1 accuracy of the student against the teacher's top-1 labels: how often the two agree.
        metrics["agreement"] = accuracy(1)
    return nn.ModuleDict(metrics)


def metric_inputs(name: str, student_logits: torch.Tensor, teacher_logits: torch.Tensor | None,
                  targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if name == "teacher_acc_top1":
        assert teacher_logits is not None, "the teacher's metrics exist only with a teacher"
        return teacher_logits, targets
    if name == "agreement":
        assert teacher_logits is not None, "the teacher's metrics exist only with a teacher"
        return student_logits, teacher_logits.argmax(1)
    return student_logits, targets


@dataclass
class Batch:
    """A batch as the data modules yield it: in-memory sets add each sample's index, and augmented training
    batches each image's augmentation variant (which cached teacher outputs to read)."""

    images: torch.Tensor
    targets: torch.Tensor
    indices: torch.Tensor | None = None
    variants: torch.Tensor | None = None


def unpack(batch: tuple[torch.Tensor, ...]) -> Batch:
    return Batch(*batch)


@dataclass(frozen=True)
class EpochPlan:
    """What every training step of one epoch computes and records (see ``DistillationModule._epoch_plan``)."""

    epoch: int
    terms: dict[str, LossTerm]
    names: tuple[str, ...]  # of the recorded values: "total", the active terms, "acc_top1"


def weighted_total(terms: dict[str, LossTerm], values: dict[str, torch.Tensor]) -> torch.Tensor:
    """``sum(weight * value)`` without the ``0 +`` of Python's ``sum`` or a multiplication by a weight of 1
    (each is a tensor op in the forward and the backward pass; the result is the same)."""
    total: torch.Tensor | None = None
    for name, value in values.items():
        weight = terms[name].weight
        part = value if weight == 1.0 else weight * value
        total = part if total is None else total + part
    assert total is not None, "weighted_total needs at least one term"
    return total


def term_dict(loss_terms: nn.ModuleDict) -> dict[str, LossTerm]:
    """The terms of ``loss_terms`` by name (torch types an ``nn.ModuleDict``'s values as plain modules)."""
    return {name: cast(LossTerm, term) for name, term in loss_terms.items()}


def consume_step_records(module: DistillationModule, prefix: str, keep_vars: bool) -> None:
    """State-dict pre-hook (a module-level function, so the module still pickles): fold the watched rows in."""
    module.divergence.consume()


class DistillationModule(L.LightningModule):
    """Trains ``student`` on a weighted sum of ``loss_terms``; ``teacher`` (optional) stays frozen.

    The teacher has no gradients, is always in eval mode (so dropout is off and BatchNorm statistics
    never change, whatever Lightning does to train/eval modes around validation) and is not saved in
    checkpoints: it is rebuilt from its own source, which keeps checkpoints student-sized.
    """

    student_forward: Callable[[torch.Tensor], torch.Tensor]  # set in __init__, outside the module tree

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
        terms = term_dict(loss_terms)
        needing_teacher = [name for name, term in terms.items() if term.needs_teacher]
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
        self.student_taps = FeatureTaps(student, [n for t in terms.values() for n in t.student_layers], "student")
        self.teacher_taps: FeatureTaps | None = None
        # The live teacher's validation logits, kept from the first pass (they are the same every epoch).
        self.val_teacher_logits = EvalTeacherLogits()
        if teacher is not None:
            teacher.requires_grad_(False)
            teacher.eval()
            teacher.to(next(student.parameters()).device)  # one device for the dry run (Lightning moves both)
            self.teacher_taps = FeatureTaps(teacher, [n for t in terms.values() for n in t.teacher_layers],
                                            "teacher")
        self.channels_last = channels_last and len(input_shape) == 3
        if self.channels_last:
            student.to(memory_format=torch.channels_last)
            if teacher is not None:
                teacher.to(memory_format=torch.channels_last)
        # The compiled student is kept outside the module tree, so checkpoints keep plain ``student.`` keys.
        object.__setattr__(self, "student_forward", torch.compile(student) if compile_student else student)
        self._build_adapters(input_shape)
        self.train_means = EpochMeans(["total", *loss_terms, "acc_top1"])
        self._plan: EpochPlan | None = None
        # Each step's values, kept on the device: checked for NaN/inf and added to the epoch sums at the host
        # syncs, and added before any state_dict (a checkpoint's sums include every step before it).
        self.divergence = NonFiniteWatch(consumer=self._add_to_epoch_means)
        self.register_state_dict_pre_hook(consume_step_records)
        self.progress_values: dict[str, float] = {}  # host numbers for distill.progress.StepValuesProgressBar
        self.eval_metrics = nn.ModuleDict(
            {split: eval_metrics(num_classes, teacher is not None) for split in ("val", "test")}
        )
        self.eval_losses = nn.ModuleDict({split: MeanMetric(nan_strategy="disable") for split in ("val", "test")})

    def _build_adapters(self, input_shape: tuple[int, ...]) -> None:
        """Dry run on a small batch so that loss terms can size their adapters before the optimizer exists."""
        example = torch.zeros(2, *input_shape, device=next(self.student.parameters()).device)
        was_training = self.student.training
        self.student.eval()
        with torch.no_grad():
            outputs = self._forward(example)
        self.student.train(was_training)
        for term in term_dict(self.loss_terms).values():
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
            for term in term_dict(self.loss_terms).values():
                # Trainer sets datamodule at runtime (its data connector); lightning's Trainer does not declare it.
                term.attach_data(self.trainer.datamodule)  # type: ignore[attr-defined]

    def on_fit_start(self) -> None:
        # Lightning keeps each submodule's train/eval mode as it finds it; start from a known state.
        self.train()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.student(images)

    def _teacher_outputs(self, images: torch.Tensor, indices: torch.Tensor | None, split: str,
                         variants: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Teacher logits and features: looked up when cached (no feature terms then), else a live forward."""
        if self.teacher_outputs is not None and indices is not None:
            return self.teacher_outputs.lookup(split, indices, variants), {}
        assert self.teacher is not None and self.teacher_taps is not None, "no teacher to run"
        with torch.no_grad():
            logits = self.teacher(images)
        return logits, self.teacher_taps.pop()

    def _prepare_images(self, images: torch.Tensor) -> torch.Tensor:
        return images.contiguous(memory_format=torch.channels_last) if self.channels_last else images

    def _forward(self, images: torch.Tensor, targets: torch.Tensor | None = None,
                 indices: torch.Tensor | None = None, variants: torch.Tensor | None = None) -> DistillBatch:
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
            batch.teacher_logits, batch.teacher_features = self._teacher_outputs(images, indices, "train", variants)
        return batch

    def active_terms(self) -> dict[str, LossTerm]:
        """All terms, except during a FitNet-style hint-only stage, when only the hint terms train.

        After that stage, terms that belong to it alone (``main_stage`` false: AB's and FSP's init training) drop out.
        """
        return self._epoch_plan().terms

    def _epoch_plan(self) -> EpochPlan:
        """This epoch's active terms and the names of the values each step records.

        They change only with the epoch (the hint-only stage), so steps reuse them instead of rebuilding them.
        """
        epoch = self.current_epoch if self._trainer is not None else 0
        plan = self._plan
        if plan is None or plan.epoch != epoch:
            all_terms = term_dict(self.loss_terms)
            hint_only = {name: term for name, term in all_terms.items() if getattr(term, "hint_only_epochs", 0) > epoch}
            terms = hint_only or {name: term for name, term in all_terms.items() if getattr(term, "main_stage", True)}
            plan = self._plan = EpochPlan(epoch, terms, ("total", *terms, "acc_top1"))
        return plan

    def training_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> torch.Tensor | None:
        parts = unpack(batch)
        targets = parts.targets
        outputs = self._forward(parts.images, targets, parts.indices, parts.variants)
        plan = self._epoch_plan()
        values = {name: term(outputs) for name, term in plan.terms.items()}
        total = weighted_total(plan.terms, values)
        # Skipping must decide before the optimizer step: one host sync per step, the price of skip mode.
        if self.on_non_finite == "skip" and not bool(torch.isfinite(total)):
            self._non_finite(values, total)
            return None
        # The step's record (total, terms, train accuracy): one device vector copied into a row of the watch,
        # no host sync and no metric update per step. On a step of a few milliseconds every small tensor op
        # shows (docs/performance.md); the epoch sums get the rows in a few ops at the next check.
        with torch.no_grad():
            correct = outputs.student_logits.argmax(1) == targets
            record = torch.stack([total, *values.values(), correct.mean(dtype=torch.float32)])
        self.divergence.update(record, plan.names, self.global_step, plan.epoch, len(targets))
        if self._trainer is not None and self.trainer._logger_connector.should_update_logs:
            self._log_step_loss(total)
        return total

    def _log_step_loss(self, total: torch.Tensor) -> None:
        """The step's loss, on the steps the loggers write (``log_every_n_steps``): one host sync, then floats.

        ``self.log`` is bypassed on purpose: Lightning keeps a step value logged with ``prog_bar=True`` and
        converts it with ``.item()`` again on every later step of the epoch, a host-device sync per step on
        a GPU. ``should_update_logs`` and ``_batches_that_stepped`` are Lightning's own (private) test and
        step counter for "the loggers write now", so these rows land on the same steps as Lightning's.
        """
        value = self.divergence.check(read=total)
        assert value is not None, "check returns the value of read"
        self.progress_values["train/loss_step"] = value
        step = self.trainer.fit_loop.epoch_loop._batches_that_stepped
        for logger in self.loggers:
            logger.log_metrics({"train/loss_step": value, "epoch": self.current_epoch}, step=step)

    def _add_to_epoch_means(self, rows: torch.Tensor, names: tuple[str, ...],
                            runs: list[tuple[int, int, int]]) -> None:
        """The watch's rows into the epoch sums: one update per run of steps with the same batch size."""
        positions = self.train_means.positions(names)
        for start, stop, batch_size in runs:
            self.train_means.update(rows[start:stop].sum(0), positions, batch_size, steps=stop - start)

    def on_train_epoch_end(self) -> None:
        # Epoch means from the device-side sums (one sync per epoch); the names Lightning gave them before.
        self.divergence.check()
        log_epoch_means(self, self.train_means, {f"loss/{name}": name for name in self.active_terms()})

    def _non_finite(self, values: dict[str, torch.Tensor], total: torch.Tensor) -> None:
        """Stop the run (``on_non_finite='error'``) or skip this batch: returning None skips the optimizer step."""
        term = next((name for name, value in values.items() if not bool(torch.isfinite(value))), None)
        label = f"term '{term}'" if term else "the weighted total"
        value = float((values[term] if term else total).detach())
        self.skipped_batches += 1
        log.warning("skipped batch %d of epoch %d: %s = %s (%d skipped so far)", self.global_step,
                    self.current_epoch, label, value, self.skipped_batches)
        if self.max_skipped_batches is not None and self.skipped_batches > self.max_skipped_batches:
            raise DivergenceError(f"{label} (more than guard.max_skipped_batches={self.max_skipped_batches} "
                                  "batches skipped)", value, self.current_epoch, self.global_step)
        return None

    def _eval_step(self, batch: tuple[torch.Tensor, ...], split: str) -> None:
        parts = unpack(batch)
        images, targets, indices = self._prepare_images(parts.images), parts.targets, parts.indices
        student_logits = self.student_forward(images)
        self.student_taps.pop()
        teacher_logits = None
        if self.teacher is not None:
            teacher_logits = self._eval_teacher_logits(images, indices, split)
        # update() only: calling a metric (forward) would also compute it every step. Logged at the epoch end.
        # torch types a ModuleDict's values as plain modules; these hold the metrics made in __init__.
        cast(MeanMetric, self.eval_losses[split]).update(nn.functional.cross_entropy(student_logits, targets),
                                                         len(targets))
        for name, metric in cast(nn.ModuleDict, self.eval_metrics[split]).items():
            cast(Metric, metric).update(*metric_inputs(name, student_logits, teacher_logits, targets))

    def _eval_teacher_logits(self, images: torch.Tensor, indices: torch.Tensor | None, split: str) -> torch.Tensor:
        """The teacher's logits on an evaluation batch: a live teacher's on validation images it has seen are
        read back (distill/teacher/eval_logits.py); the first read is checked against a live pass."""
        store = self.val_teacher_logits
        if split != "val" or indices is None or self.teacher_outputs is not None or store.off:
            return self._teacher_outputs(images, indices, split)[0]
        kept = store.lookup(indices)
        if kept is not None and store.verified:
            return kept
        live = self._teacher_outputs(images, indices, split)[0]
        if kept is None:
            store.add(indices, live)
        else:
            store.verify(kept, live)
        return live

    def _log_eval(self, split: str) -> None:
        self.log(f"{split}/loss/ce", cast(MeanMetric, self.eval_losses[split]))
        for name, metric in cast(nn.ModuleDict, self.eval_metrics[split]).items():
            self.log(f"{split}/{name}", cast(Metric, metric), prog_bar=split == "val")

    def validation_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def test_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def on_validation_epoch_end(self) -> None:
        self._log_eval("val")

    def on_test_epoch_end(self) -> None:
        self._log_eval("test")

    def configure_optimizers(self) -> Any:
        # Adapters inside loss terms train with the student; the teacher has no trainable parameters.
        parameters = [p for p in self.student.parameters()] + [p for p in self.loss_terms.parameters()]
        optimizer = self.optimizer_factory(params=parameters)
        if self.scheduler_factory is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": self.scheduler_factory(optimizer),
                                                         "interval": "epoch"}}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.divergence.check()  # never write weights that a non-finite step has touched
        checkpoint["skipped_batches"] = self.skipped_batches
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if not k.startswith("teacher.")}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.skipped_batches = int(checkpoint.get("skipped_batches", 0))
        # Checkpoints from before the epoch sums were training state: start the epoch's sums at zero.
        for key, value in self.train_means.state_dict(prefix="train_means.").items():
            checkpoint["state_dict"].setdefault(key, torch.zeros_like(value))
        if self.teacher is not None:
            checkpoint["state_dict"].update({f"teacher.{k}": v for k, v in self.teacher.state_dict().items()})
