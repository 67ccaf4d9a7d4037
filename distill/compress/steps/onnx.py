"""``onnx``: the fp32 ONNX export of the student (and of the teacher), checked in onnxruntime against PyTorch
on test images. Every other step measures against it or converts it, so it runs whenever any step is asked.
Each file records the data's preprocessing and class names as ONNX metadata; ``onnx.preprocess=true`` puts
the scaling and normalisation into the graph."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from distill.compress.checks import check_choice, check_flag, check_number, check_positive
from distill.compress.step import CompressionStep, Variant, Workspace, register_step
from distill.errors import ConfigError

log = logging.getLogger("distill")

EXPORTERS = ("torchscript", "dynamo")
# Lowest and highest opset each exporter of torch.onnx writes (dynamo raises anything below 18 to 18).
OPSETS = {"torchscript": (7, 20), "dynamo": (7, 23)}


def check(settings: Any, has_teacher: bool) -> None:
    onnx = settings.onnx
    check_choice(onnx.exporter, EXPORTERS, "onnx.exporter")
    opset, (lowest, highest) = onnx.opset, OPSETS[onnx.exporter]
    if isinstance(opset, bool) or not isinstance(opset, int) or not lowest <= opset <= highest:
        raise ConfigError(f"compress.onnx.opset={opset} must be a whole number from {lowest} to {highest} (the "
                          f"opsets the {onnx.exporter} exporter writes)")
    check_positive(onnx.check_images, "onnx.check_images")
    check_number(onnx.tolerance, "onnx.tolerance", 0, None, " (the largest |logit difference| accepted)")
    check_flag(onnx.get("preprocess", False), "onnx.preprocess")


def convert(workspace: Workspace, source: Variant, stem: str, label: str) -> Variant:
    """``<stem>.onnx`` of the PyTorch network of ``source``, checked on the workspace's test images."""
    from distill.compress import onnx_io
    from distill.export import model_usage

    settings = workspace.settings
    check_result = onnx_io.export_checked(source.model, workspace.input_shape, workspace.run_dir / f"{stem}.onnx",
                                          workspace.check_images, settings.onnx, label, settings.runtime.threads,
                                          model_usage(workspace.datamodule))
    log.info("%s.onnx: max |logit diff| %.3g against PyTorch, top-1 agreement %.2f %% (%s exporter)", stem,
             check_result["max_abs_logit_diff"], 100 * check_result["top1_agreement"], check_result["exporter"])
    return workspace.add(Variant(f"{label} ONNX fp32".strip(), Path(check_result["file"]), source.model, "fp32",
                                 {"export_check": check_result}))


def run(workspace: Workspace) -> None:
    convert(workspace, workspace.latest("PyTorch fp32"), "student", "")
    if workspace.teacher is not None:  # every model a run exports ships as ONNX too, checked the same way
        teacher = workspace.teacher.cpu().eval()
        convert(workspace, Variant("teacher", Path(), teacher, "fp32"), "teacher", "teacher")


register_step(CompressionStep("onnx", rows=("ONNX fp32", "teacher ONNX fp32"), check=check, run=run,
                              convert=convert, student_only=False))
