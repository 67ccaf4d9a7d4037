"""A candidate's cost on the device, measured before it trains: an untrained network has the latency, file size
and MACs of a trained one, so a candidate over budget is never trained.

Measurements are cached by architecture, input, runtime and threads (``<cache_dir>/search_measurements``): a
search, its resumption and the next search on the same machine measure each architecture once.
"""

from __future__ import annotations

import hashlib
import json
import logging
import platform
import tempfile
from pathlib import Path
from typing import Any

import torch

from distill.config import to_dict
from distill.io import read_json, write_json
from distill.models import create_model
from distill.search.space import Candidate

log = logging.getLogger("distill")

MEASUREMENT_FORMAT = 1
CPU = torch.device("cpu")  # the budget is measured where the deployed file runs: the CPU, fixed threads


def measurement_key(candidate: Candidate, input_shape: tuple[int, ...], num_classes: int, budget: Any) -> str:
    import onnxruntime

    recipe = {"format": MEASUREMENT_FORMAT, "model": candidate.key, "input_shape": list(input_shape),
              "num_classes": num_classes, "runtime": budget.runtime, "threads": budget.threads,
              "repeats": budget.repeats, "torch": torch.__version__, "onnxruntime": onnxruntime.__version__,
              "machine": platform.machine(), "processor": platform.processor()}
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]


def measure(candidate: Candidate, datamodule: Any, budget: Any, cache_dir: str | Path) -> dict[str, Any]:
    """Latency (median ms at batch 1), deployable bytes and MACs of ``candidate`` on ``budget.runtime``."""
    input_shape, num_classes = tuple(datamodule.input_shape), datamodule.num_classes
    key = measurement_key(candidate, input_shape, num_classes, budget)
    path = Path(cache_dir).expanduser() / "search_measurements" / f"{key}.json"
    if path.is_file():
        try:
            return dict(read_json(path))
        except (OSError, ValueError) as error:
            log.warning("measurement cache entry %s is unreadable (%s); measuring again", path, error)
    model = create_model(candidate.name, num_classes, datamodule.in_chans, candidate.kwargs_dict, role="student")
    model.eval()
    distinct_values(model)
    from distill.measure import count_flops, parameter_count

    result: dict[str, Any] = {"candidate": candidate.label, "runtime": budget.runtime, "threads": budget.threads,
                              "macs": count_flops(model, input_shape)["macs"], "params": parameter_count(model)}
    result.update(_speed_and_bytes(model, input_shape, datamodule, budget))
    write_json(path, result)
    return result


def distinct_values(model: torch.nn.Module) -> None:
    """Random values in every parameter and buffer of float type. A freshly built network's biases are all zero,
    identical tensors that the ONNX export stores once and onnxruntime's int8 quantiser then fails on (a bias
    shared by two layers); a trained network has distinct ones. Size, MACs and speed do not depend on the values."""
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for tensor in [*model.parameters(), *model.buffers()]:
            if tensor.is_floating_point():
                tensor.copy_(torch.rand(tensor.shape, generator=generator) * 0.1 + 0.01)


def _speed_and_bytes(model: torch.nn.Module, input_shape: tuple[int, ...], datamodule: Any,
                     budget: Any) -> dict[str, Any]:
    from distill.measure import spread, time_calls

    threads = torch.get_num_threads()
    torch.set_num_threads(budget.threads)
    try:
        if budget.runtime == "pytorch":
            from distill.measure import saved_bytes

            single = torch.randn(1, *input_shape)

            def forward() -> Any:
                with torch.no_grad():
                    return model(single)

            latency = spread(t * 1e3 for t in time_calls(forward, CPU, budget.warmup, budget.repeats))
            return {"latency_ms": latency["median"], "latency_spread": latency, "bytes": saved_bytes(model)}
        return _onnx_speed_and_bytes(model, input_shape, datamodule, budget)
    finally:
        torch.set_num_threads(threads)


def _onnx_speed_and_bytes(model: torch.nn.Module, input_shape: tuple[int, ...], datamodule: Any,
                          budget: Any) -> dict[str, Any]:
    import numpy as np
    from omegaconf import OmegaConf

    from distill.compress import ort_runtime, quantize
    from distill.compress.onnx_io import export_onnx
    from distill.measure import spread, time_calls

    with tempfile.TemporaryDirectory(prefix="distill-search-") as folder:
        path = export_onnx(model, input_shape, Path(folder) / "candidate.onnx")
        if budget.runtime == "onnx_int8":
            # The deployed file's size and speed: calibrated like compress.int8 (its settings), on training images.
            settings = OmegaConf.create(to_dict(budget.int8))
            images = quantize.training_images(datamodule, settings.calibration_images, settings.seed)
            reader = quantize.TrainingImagesReader(images, settings.calibration_batch_size)
            path = Path(quantize.quantize_int8(path, Path(folder) / "candidate.int8.onnx", reader, settings)["file"])
        session = ort_runtime.session(path, budget.threads)
        name = ort_runtime.input_name(session)
        single = np.random.default_rng(0).standard_normal((1, *input_shape), dtype=np.float32)
        latency = spread(t * 1e3 for t in time_calls(lambda: session.run(None, {name: single}), CPU, budget.warmup,
                                                      budget.repeats))
        return {"latency_ms": latency["median"], "latency_spread": latency, "bytes": path.stat().st_size}


def resolve_limits(budget: Any, default_cost: dict[str, Any]) -> dict[str, float]:
    """The limits that apply, as numbers (``default``: the default student's value)."""
    return {metric: float(default_cost[metric] if limit == "default" else limit)
            for metric, limit in to_dict(budget.limits).items() if limit is not None}


def describe_limits(limits: dict[str, float]) -> str:
    """``bytes <= 9159 and macs <= 5.084e+05``."""
    return " and ".join(f"{metric} <= {limit:.4g}" for metric, limit in limits.items())


def over(measurement: dict[str, Any], limits: dict[str, float]) -> list[str]:
    """The limits ``measurement`` exceeds, as ``metric value > limit`` (empty: within budget)."""
    return [f"{metric} {float(measurement[metric]):.4g} > {limit:.4g}" for metric, limit in limits.items()
            if float(measurement[metric]) > limit]
