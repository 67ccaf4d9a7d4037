"""int8 post-training static quantisation with onnxruntime: QDQ (or QOperator) format, per-channel weights.

Activation ranges are calibrated on training images only: calibrating on test images would tune the
quantiser to the very data the int8 accuracy is then measured on.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quant_pre_process,
    quantize_static,
)

from distill.compress.onnx_io import INPUT_NAME, read_usage, save_onnx, usage_metadata

METHODS = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
           "percentile": CalibrationMethod.Percentile}
# qdq: QuantizeLinear/DequantizeLinear around float ops, standard ONNX that any runtime or execution provider
# reads (onnxruntime fuses the patterns into integer kernels when it loads the file). qoperator: the integer
# ops themselves (QLinearConv, and onnxruntime's own com.microsoft QGemm, QLinearGlobalAveragePool), a
# smaller file (no weight/bias DequantizeLinear nodes, no bias scales) that only onnxruntime runs.
FORMATS = {"qdq": (QuantFormat.QDQ, "QDQ"), "qoperator": (QuantFormat.QOperator, "QOperator")}


def training_images(datamodule: Any, count: int, seed: int = 0) -> torch.Tensor:
    """``count`` images drawn at random from the training split, as the model sees them (normalised, no
    augmentation: that is applied on the device during training only)."""
    datamodule.setup("fit")
    splits = getattr(datamodule, "splits", None)
    if splits and "train" in splits:
        images = splits["train"].images
        generator = torch.Generator().manual_seed(seed)
        chosen = torch.randperm(len(images), generator=generator)[:count]
        return images[chosen.sort().values]
    batches, taken = [], 0
    torch.manual_seed(seed)  # image folders: the shuffled training loader, read only as far as needed
    for images, *_ in datamodule.train_dataloader():
        batches.append(images[: count - taken])
        taken += len(batches[-1])
        if taken >= count:
            break
    return torch.cat(batches)


class TrainingImagesReader(CalibrationDataReader):
    """Feeds onnxruntime's calibrator a fixed set of training images, ``batch_size`` at a time.

    ``yielded`` keeps every batch handed out, so what calibration saw can be checked afterwards.
    """

    def __init__(self, images: torch.Tensor, batch_size: int = 32, input_name: str = INPUT_NAME) -> None:
        self.images = images.numpy().astype(np.float32)
        self.batch_size = batch_size
        self.input_name = input_name
        self.yielded: list[np.ndarray] = []
        self._next = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._next >= len(self.images):
            return None
        batch = np.ascontiguousarray(self.images[self._next:self._next + self.batch_size])
        self._next += self.batch_size
        self.yielded.append(batch)
        return {self.input_name: batch}

    def rewind(self) -> None:
        self._next = 0


def quantize_int8(fp32_path: str | Path, int8_path: str | Path, reader: TrainingImagesReader,
                  settings: Any) -> dict[str, Any]:
    """Write the int8 model of ``fp32_path`` (uint8 activations, int8 weights) in ``settings.format``, with the
    fp32 file's preprocessing and classes as its metadata. ``reader`` hands out images as the fp32 graph takes
    them (``onnx_io.graph_input``)."""
    fp32_path, int8_path = Path(fp32_path), Path(int8_path)
    usage = read_usage(fp32_path)
    prepared = int8_path.with_name(f".{int8_path.stem}.prepared.onnx")
    raw = int8_path.with_name(f".{int8_path.name}.raw")
    try:
        # Shape inference and graph fusions first, as onnxruntime recommends before quantising.
        quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
        quantize_static(str(prepared), str(raw), reader, quant_format=FORMATS[settings.format][0],
                        per_channel=settings.per_channel, reduce_range=settings.reduce_range,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=METHODS[settings.calibrate_method])
        import onnx

        save_onnx(onnx.load(str(raw)), int8_path, usage_metadata(usage))
    finally:
        prepared.unlink(missing_ok=True)
        raw.unlink(missing_ok=True)
    in_graph = (usage.get("preprocessing") or {}).get("in_graph", False)
    return {"file": str(int8_path), "calibration_images": int(sum(len(b) for b in reader.yielded)),
            "calibration_input": "pixel values" if in_graph else "normalised images",
            "calibration_split": "train", "calibrate_method": settings.calibrate_method,
            "per_channel": bool(settings.per_channel), "reduce_range": bool(settings.reduce_range),
            "format": f"{FORMATS[settings.format][1]} (uint8 activations, int8 weights)"}
