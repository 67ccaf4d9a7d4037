"""``prune``: channels removed to a MACs target (Torch-Pruning), then distilled back; the pruned network is
saved as ``pruned.safetensors`` + ``pruned.json`` and passes through the ONNX export and int8 as well."""

from __future__ import annotations

import copy
import logging
from typing import Any

from distill.compress.checks import check_choice, check_number, check_positive, loss_preset_path
from distill.compress.step import CompressionStep, Variant, Workspace, register_step, step_settings
from distill.errors import ConfigError

log = logging.getLogger("distill")

IMPORTANCES = ("l1", "l2")
PRUNE_TEACHERS = ("unpruned", "teacher")


def check(settings: Any, has_teacher: bool) -> None:
    prune = step_settings(settings, "prune")
    ratio = prune.macs_ratio
    if not isinstance(ratio, (int, float)) or not 0 < ratio < 1:
        raise ConfigError(f"compress.prune.macs_ratio={ratio} must lie strictly between 0 and 1 (the pruned "
                          "model's share of the student's MACs), e.g. compress.prune.macs_ratio=0.5")
    check_number(prune.tolerance, "prune.tolerance", 0, 1, " (the accepted relative distance to the MACs target)")
    check_choice(prune.importance, IMPORTANCES, "prune.importance")
    check_choice(prune.teacher, PRUNE_TEACHERS, "prune.teacher")
    if prune.teacher == "teacher" and not has_teacher:
        raise ConfigError("compress.prune.teacher=teacher but this run has no teacher; "
                          "use compress.prune.teacher=unpruned")
    if prune.round_to is not None:
        check_positive(prune.round_to, "prune.round_to")
    if prune.loss is not None:
        loss_preset_path(prune.loss, "compress.prune.loss")
    check_positive(prune.epochs, "prune.epochs")


def run(workspace: Workspace) -> None:
    from distill.compress import prune, recover
    from distill.export import export_model
    from distill.layer_sizes import layer_sizes
    from distill.measure import accuracy

    settings, datamodule = workspace.settings.prune, workspace.datamodule
    pruned, info = prune.prune_to_macs(workspace.student, workspace.input_shape, settings.macs_ratio,
                                       settings.importance, settings.round_to, settings.tolerance)
    info["test_top1_before_recovery"] = accuracy(pruned, datamodule.test_dataloader(), datamodule.num_classes)["top1"]
    teacher = copy.deepcopy(workspace.student) if settings.teacher == "unpruned" else workspace.teacher
    assert teacher is not None, "check refuses prune.teacher=teacher without a teacher"
    loss = recover.loss_config(settings.loss, workspace.cfg.loss, "compress.prune.loss")
    result = recover.distill_into(workspace.cfg, pruned, teacher, datamodule, workspace.run_dir / "compress" / "prune",
                                  settings.epochs, loss)
    pruned = pruned.cpu().eval()
    info.update({"teacher": settings.teacher, "loss": list(loss.keys()), "epochs": settings.epochs,
                 "test_top1_after_recovery": result.metrics.get("test/acc_top1")})
    description = export_model(pruned, workspace.architecture, workspace.model_kwargs, workspace.run_dir,
                               stem="pruned", extra={"layers": layer_sizes(pruned), "pruning": info,
                                                     "input_shape": list(workspace.input_shape)},
                               datamodule=workspace.datamodule)
    log.info("pruned model: %s (top-1 %.2f %% before recovery, %.2f %% after)", description,
             100 * info["test_top1_before_recovery"], 100 * (info["test_top1_after_recovery"] or 0))
    workspace.add_model(Variant("pruned PyTorch fp32", description.with_suffix(".safetensors"), pruned, "fp32",
                                {"pruning": info}), "pruned", "pruned")


# It needs the ONNX export: the pruned network is measured beside the student's checked export.
register_step(CompressionStep("prune", rows=("pruned PyTorch fp32",), check=check, run=run, needs=("onnx",),
                              model_label="pruned"))
