"""``qat``: quantisation-aware training (torchao PT2E), the fp32 student as teacher, exported as
``qat.int8.onnx``."""

from __future__ import annotations

import copy
from typing import Any

from distill.compress.checks import check_number, check_positive, loss_preset_path
from distill.compress.step import CompressionStep, Variant, Workspace, register_step, step_settings


def check(settings: Any, has_teacher: bool) -> None:
    qat = step_settings(settings, "qat")
    check_positive(qat.epochs, "qat.epochs")
    check_positive(qat.calibration_images, "qat.calibration_images")
    check_number(qat.lr, "qat.lr", 0, None, " (the fine-tuning learning rate)")
    if qat.loss is not None:
        loss_preset_path(qat.loss, "compress.qat.loss")


def run(workspace: Workspace) -> None:
    from distill.compress import onnx_io, qat, quantize, recover
    from distill.export import model_usage

    settings = workspace.settings.qat
    prepared = qat.prepare_qat(workspace.student, workspace.input_shape)
    qat.calibrate(prepared, quantize.training_images(workspace.datamodule, settings.calibration_images))
    loss = recover.loss_config(settings.loss, workspace.cfg.loss, "compress.qat.loss")
    result = recover.distill_into(workspace.cfg, prepared, copy.deepcopy(workspace.student), workspace.datamodule,
                                  workspace.run_dir / "compress" / "qat", settings.epochs, loss, lr=settings.lr)
    path = qat.convert_to_onnx(prepared, workspace.input_shape, workspace.run_dir / "qat.int8.onnx",
                               workspace.settings.onnx.opset)
    onnx_io.record_usage(path, model_usage(workspace.datamodule))  # preprocessing and classes, as every export
    info = {"epochs": settings.epochs, "loss": list(loss.keys()), "lr": settings.lr, "versions": qat.versions(),
            "calibration_images": settings.calibration_images,
            "test_top1_fake_quantized": result.metrics.get("test/acc_top1"),
            "flow": "torchao PT2E: prepare_qat_pt2e(X86InductorQuantizer) -> convert_pt2e -> ONNX (dynamo)"}
    workspace.add(Variant("QAT ONNX int8", path, workspace.student, "int8", {"qat": info}))


# It needs the ONNX export: the QAT file is measured beside the student's checked fp32 export.
register_step(CompressionStep("qat", rows=("QAT ONNX int8",), check=check, run=run, needs=("onnx",)))
