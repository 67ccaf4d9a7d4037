"""``int8``: onnxruntime static quantisation (QDQ or QOperator) of the fp32 ONNX export, calibrated on training
images only (never validation or test), fed as the fp32 file takes them (pixel values when its graph normalises:
``compress.onnx.preprocess=true``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from distill.compress.checks import check_choice, check_count, check_flag, check_positive
from distill.compress.step import CompressionStep, Variant, Workspace, register_step, step_settings

CALIBRATE_METHODS = ("minmax", "entropy", "percentile")
INT8_FORMATS = ("qdq", "qoperator")


def check(settings: Any, has_teacher: bool) -> None:
    int8 = step_settings(settings, "int8")
    check_choice(int8.calibrate_method, CALIBRATE_METHODS, "int8.calibrate_method")
    check_choice(int8.format, INT8_FORMATS, "int8.format")
    check_positive(int8.calibration_images, "int8.calibration_images")
    check_positive(int8.calibration_batch_size, "int8.calibration_batch_size")
    check_flag(int8.per_channel, "int8.per_channel")
    check_flag(int8.reduce_range, "int8.reduce_range")
    check_count(int8.seed, "int8.seed")


def convert(workspace: Workspace, fp32: Variant, stem: str, label: str) -> Variant:
    """``<stem>.int8.onnx`` of the fp32 ONNX file of ``fp32``."""
    from distill.compress import onnx_io, quantize

    settings = workspace.settings.int8
    images = quantize.training_images(workspace.datamodule, settings.calibration_images, settings.seed)
    images = onnx_io.graph_input(images, onnx_io.read_usage(fp32.file).get("preprocessing"))
    reader = quantize.TrainingImagesReader(images, settings.calibration_batch_size)
    info = quantize.quantize_int8(fp32.file, workspace.run_dir / f"{stem}.int8.onnx", reader, settings)
    return workspace.add(Variant(f"{label} ONNX int8".strip(), Path(info["file"]), fp32.model, "int8",
                                 {"quantization": info}))


def run(workspace: Workspace) -> None:
    convert(workspace, workspace.latest("ONNX fp32"), "student", "")


register_step(CompressionStep("int8", rows=("ONNX int8",), check=check, run=run, convert=convert,
                              needs=("onnx",)))
