"""One measured row per deployable variant: accuracy, file bytes, parameters, MACs, latency, throughput, energy.

ONNX files are measured in onnxruntime (the runtime that ships them) and PyTorch weights in PyTorch,
both on the CPU with the same fixed thread count, so the rows compare like with like.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from distill import measure
from distill.compress import onnx_io, ort_runtime
from distill.compress.step import Variant
from distill.report import accuracy_limits, format_log_x_plot, pareto_front, save_figure

log = logging.getLogger(__name__)


def _pytorch_row(variant: Variant, datamodule: Any, runtime: Any, input_shape: tuple[int, ...]) -> dict[str, Any]:
    model = variant.model.cpu().eval()
    speed = measure.measure_speed(model, input_shape, runtime.throughput_batch_size, runtime.warmup,
                                  runtime.repeats)
    speed["runtime"] = f"PyTorch {torch.__version__}"
    return {"accuracy": measure.accuracy(model, datamodule.test_dataloader(), datamodule.num_classes),
            "speed": speed}


def _onnx_row(variant: Variant, datamodule: Any, runtime: Any, input_shape: tuple[int, ...]) -> dict[str, Any]:
    session = ort_runtime.session(variant.file, runtime.threads)
    # A graph that normalises its input (compress.onnx.preprocess=true) is fed pixel values, as it will be deployed.
    batches = onnx_io.graph_batches(variant.file, datamodule.test_dataloader())
    return {"accuracy": ort_runtime.accuracy(session, batches, datamodule.num_classes),
            "speed": ort_runtime.measure_speed(session, input_shape, runtime.threads, runtime.throughput_batch_size,
                                               runtime.warmup, runtime.repeats)}


def measure_variant(variant: Variant, datamodule: Any, runtime: Any) -> dict[str, Any]:
    """The report row of ``variant``; PyTorch runs with ``runtime.threads`` threads while it is measured."""
    input_shape = tuple(datamodule.input_shape)
    threads = torch.get_num_threads()
    torch.set_num_threads(runtime.threads)
    try:
        measure_row = _onnx_row if variant.runtime == "onnxruntime" else _pytorch_row
        measured = measure_row(variant, datamodule, runtime, input_shape)
    finally:
        torch.set_num_threads(threads)
    model = variant.model.cpu().eval()
    row = {"variant": variant.name, "runtime": variant.runtime, "precision": variant.precision,
           "file": variant.file.name, "bytes": variant.file.stat().st_size,
           "params": measure.parameter_count(model), **measure.count_flops(model, input_shape), **measured,
           "details": variant.details}
    log.info("%s: top-1 %.2f %%, %d bytes, %.3f ms at batch 1 (%s)", variant.name,
             100 * row["accuracy"]["top1"], row["bytes"], row["speed"]["latency_ms_batch1"]["median"],
             row["speed"]["runtime"])
    return row


def plot_accuracy_vs_latency(rows: list[dict[str, Any]], path: str | Path, title: str) -> Path:
    """Top-1 against batch-1 latency, one labelled point per variant, the Pareto front joined by a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = [(r["speed"]["latency_ms_batch1"]["median"], 100 * r["accuracy"]["top1"]) for r in rows]
    front = pareto_front(points)
    figure, axes = plt.subplots(figsize=(8.4, 4.8))
    for row, (latency, top1), on_front in zip(rows, points, front):
        axes.scatter(latency, top1, s=50 if on_front else 30, zorder=3,
                     color="tab:red" if on_front else "tab:gray", marker="o" if row["precision"] == "fp32" else "s")
    front_points = sorted(p for p, on in zip(points, front) if on)
    if front_points:
        axes.step(*zip(*front_points), where="post", color="tab:red", alpha=0.6)
    axes.set_ylim(*accuracy_limits([top1 for _, top1 in points]))
    legend = [plt.Line2D([], [], color="tab:red", alpha=0.6, label="Pareto front\n(red: on it,\ngrey: beaten)"),
              plt.Line2D([], [], marker="o", linestyle="", color="black", label="fp32"),
              plt.Line2D([], [], marker="s", linestyle="", color="black", label="int8")]
    axes.legend(handles=legend, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7)
    axes.margins(x=0.45)
    format_log_x_plot(axes, "batch-1 latency (ms, log scale); label: file size", title)
    figure.tight_layout()  # the final layout first: the label placement below works in its pixels
    # Each label names the file size (what ships). A label is a box right of its point; one that would cover an
    # earlier label or another point moves down a line.
    markers = [tuple(axes.transData.transform(point)) for point in points]
    boxes: list[tuple[float, float]] = []  # lower-left corners of placed labels, in pixels
    width, height = 175.0, 11.0

    def blocked(x: float, y: float) -> bool:
        return (any(abs(x - bx) < width and abs(y - by) < height for bx, by in boxes)
                or any(x - 4 < mx < x + width and y - 4 < my < y + height for mx, my in markers))

    for row, (latency, top1) in sorted(zip(rows, points), key=lambda item: (-item[1][1], item[1][0])):
        x, y = axes.transData.transform((latency, top1))
        shift = 4.0
        while blocked(x + 5, y + shift) and shift > -60:
            shift -= height
        boxes.append((x + 5, y + shift))
        axes.annotate(f"{row['variant']} ({row['bytes'] / 1024:,.1f} KiB)", (latency, top1),
                      textcoords="offset points", xytext=(5, shift * 72 / figure.dpi), fontsize=7)
    return save_figure(figure, path)
