"""The efficiency report: teacher beside student on accuracy, size, MACs, latency, memory and energy.

``build_report`` measures every model on the same test split and device; ``write_report`` leaves
``report.json``, ``report.md`` and ``accuracy_vs_macs.png`` in a folder.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from distill.io import atomic_write, write_json
from distill.measure import accuracy, count_flops, measure_speed, parameter_count, peak_forward_memory, saved_bytes

log = logging.getLogger(__name__)


@dataclass
class ReportEntry:
    role: str  # teacher | student | baseline | model
    architecture: str
    model: nn.Module
    label: str = ""
    source: str = ""  # the weights file it came from, when known

    def __post_init__(self) -> None:
        self.label = self.label or f"{self.role}: {self.architecture}"


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def profile_model(entry: ReportEntry, datamodule: Any, settings: dict[str, Any], device: torch.device) -> dict:
    model = entry.model.to(device).eval()
    input_shape = tuple(datamodule.input_shape)
    return {
        "role": entry.role,
        "label": entry.label,
        "architecture": entry.architecture,
        "accuracy": accuracy(model, datamodule.test_dataloader(), datamodule.num_classes),
        "params": parameter_count(model),
        "bytes": {"fp32": saved_bytes(model, torch.float32), "fp16": saved_bytes(model, torch.float16),
                  "int8": None},  # filled once a quantised export exists
        **count_flops(model, input_shape),
        "memory": peak_forward_memory(model, input_shape),
        "speed": measure_speed(model, input_shape, settings["throughput_batch_size"], settings["warmup"],
                               settings["repeats"]),
    }


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    """numerator / denominator, or None where it is undefined (a zero, a missing or a NaN value)."""
    if numerator is None or denominator is None or not denominator:
        return None
    ratio = numerator / denominator
    return ratio if math.isfinite(ratio) else None


TEACHER_ACCURACY = "the teacher's top-1 accuracy"


def _share(ratio: float | None, what: str) -> str:
    return f"{100 * ratio:.1f} % of {what}" if ratio is not None else f"an undefined share of {what}"


def compare(student: dict, teacher: dict) -> dict[str, Any]:
    """Ratios student/teacher and the accuracy gap, with the one-line verdict users quote. Any accuracy works,
    0 % and NaN included: a ratio that is undefined is None and says so in the verdict."""
    s_top1, t_top1 = student["accuracy"]["top1"], teacher["accuracy"]["top1"]
    s_latency = student["speed"]["latency_ms_batch1"]["median"]
    t_latency = teacher["speed"]["latency_ms_batch1"]["median"]
    stable = all(m["speed"]["latency_ms_batch1"].get("stable", True) for m in (student, teacher))
    kept = _ratio(s_top1, t_top1)
    macs_ratio = _ratio(student["macs"], teacher["macs"])
    params_ratio = _ratio(student["params"], teacher["params"])
    latency_ratio = _ratio(s_latency, t_latency) if stable else None
    gap = 100 * (s_top1 - t_top1) if s_top1 is not None and t_top1 is not None else None
    latency_text = (_share(latency_ratio, "its batch-1 latency") if stable else
                    "an unmeasured share of its batch-1 latency (the timings spread too widely on this busy "
                    "machine; distill-eval measures again)")
    return {
        "student": student["label"],
        "teacher": teacher["label"],
        "params_ratio": params_ratio,
        "macs_ratio": macs_ratio,
        "latency_ratio": latency_ratio,
        "accuracy_gap_points": gap if gap is None or math.isfinite(gap) else None,
        "accuracy_kept_percent": 100 * kept if kept is not None else None,
        "summary": (f"{student['label']} kept {_share(kept, TEACHER_ACCURACY)} at {_share(macs_ratio, 'its MACs')}, "
                    f"{_share(params_ratio, 'its parameters')} and {latency_text}"),
    }


def build_report(entries: list[ReportEntry], datamodule: Any, settings: dict[str, Any]) -> dict[str, Any]:
    device = resolve_device(settings.get("device", "auto"))
    datamodule.setup("test")
    profiles = [profile_model(entry, datamodule, settings, device) for entry in entries]
    teacher = next((p for p in profiles if p["role"] == "teacher"), None)
    comparisons = [compare(p, teacher) for p in profiles if teacher is not None and p["role"] != "teacher"]
    return {
        "dataset": type(datamodule).__name__,
        "input_shape": list(datamodule.input_shape),
        "test_samples": profiles[0]["accuracy"]["samples"] if profiles else 0,
        "models": profiles,
        "comparisons": comparisons,
    }


def energy_text(energy: dict) -> str:
    """Joules per image in the unit that shows three significant digits; never a rounded-away zero."""
    if not energy["measured"]:
        return "below resolution" if energy.get("below_resolution") else "not measured"
    joules = energy["joules_per_image"]
    scale, unit = next(((s, u) for s, u in ((1.0, "J"), (1e-3, "mJ"), (1e-6, "µJ")) if joules >= s), (1e-9, "nJ"))
    return f"{joules / scale:.3g} {unit}"


def _energy_text(profile: dict) -> str:
    return energy_text(profile["speed"]["energy"])


def report_markdown(report: dict[str, Any]) -> str:
    rows = [
        "| model | top-1 | top-5 | params | fp32 size | MACs / image | latency b=1 (median [p25, p75]) | "
        "throughput | peak forward memory | energy / image |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for p in report["models"]:
        latency = p["speed"]["latency_ms_batch1"]
        top5 = p["accuracy"]["top5"]
        rows.append(
            f"| {p['label']} | {100 * p['accuracy']['top1']:.2f} % | "
            f"{f'{100 * top5:.2f} %' if top5 is not None else 'n/a'} | {p['params']:,} | "
            f"{p['bytes']['fp32'] / 1024:,.1f} KiB | {p['macs']:,} | "
            f"{latency['median']:.3f} ms [{latency['p25']:.3f}, {latency['p75']:.3f}]"
            f"{'' if latency.get('stable', True) else ' (unstable)'} | "
            f"{p['speed']['throughput_images_per_s']['median']:,.0f} img/s (b={p['speed']['throughput_batch']}) | "
            f"{p['memory']['peak_forward_bytes'] / 1024:,.1f} KiB | {_energy_text(p)} |"
        )
    lines = [f"# Efficiency report — {report['dataset']}, input {tuple(report['input_shape'])}, "
             f"{report['test_samples']} test images", "", *rows, ""]
    for comparison in report["comparisons"]:
        numbers = [("accuracy gap", comparison["accuracy_gap_points"], "{:+.2f} points"),
                   ("params", comparison["params_ratio"], "x{:.3f}"), ("MACs", comparison["macs_ratio"], "x{:.3f}"),
                   ("latency", comparison["latency_ratio"], "x{:.3f}")]
        details = ", ".join(f"{name} {fmt.format(value) if value is not None else 'n/a'}"
                            for name, value, fmt in numbers)
        lines.append(f"- **{comparison['summary']}** ({details}).")
    if report["models"]:
        speed = report["models"][0]["speed"]
        energy = report["models"][0]["speed"]["energy"]
        lines += [
            "",
            f"Measured on {speed['device']} ({speed['device_name']}), {speed['threads']} threads; latency: "
            f"{speed['warmup']} warm-up + {speed['repeats']} timed batch-1 forward passes. MACs from "
            "torch.utils.flop_counter (convolutions and matrix products). Energy: "
            + (energy["source"] if energy["measured"] else f"not measured — {energy['reason']}") + ".",
        ]
    if report.get("variants") or report.get("variant_failures"):
        lines += ["", *variants_markdown(report.get("variants", []), report.get("variant_failures", []))]
    return "\n".join(lines) + "\n"


def variants_markdown(rows: list[dict[str, Any]], failures: list[dict[str, Any]]) -> list[str]:
    """The deployable variants (distill/compress): one row each, measured on the runtime that runs the file."""
    lines = ["## Deployable variants", "",
             "| variant | runtime | top-1 | file | params | MACs / image | latency b=1 (median [p25, p75]) | "
             "throughput | energy / image |", "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for row in rows:
        latency, speed = row["speed"]["latency_ms_batch1"], row["speed"]
        lines.append(
            f"| {row['variant']} | {row['runtime']} | {100 * row['accuracy']['top1']:.2f} % | "
            f"{row['file']} ({row['bytes'] / 1024:,.1f} KiB) | {row['params']:,} | {row['macs']:,} | "
            f"{latency['median']:.3f} ms [{latency['p25']:.3f}, {latency['p75']:.3f}] | "
            f"{speed['throughput_images_per_s']['median']:,.0f} img/s (b={speed['throughput_batch']}) | "
            f"{energy_text(speed['energy'])} |")
    lines += [f"| {failure['variant']} | failed | — | — | — | — | — | — | — |" for failure in failures]
    if rows:
        speed = rows[0]["speed"]
        energy = speed["energy"]
        lines += ["", f"Variants measured on the CPU ({speed['device_name']}), {speed['threads']} thread(s) in both "
                  "runtimes; top-1 on the full test split, computed by the runtime in the row. Energy: "
                  + (energy["source"] if energy["measured"] else energy["reason"]) + ".", ""]
    for row in rows:
        check = row["details"].get("export_check")
        if check:
            lines.append(f"- {row['variant']}: {check['exporter']} exporter (opset {check['opset']}), max |logit "
                         f"difference| {check['max_abs_logit_diff']:.2e} against PyTorch and top-1 agreement "
                         f"{100 * check['top1_agreement']:.2f} % on {check['images']} test images.")
        quantized = row["details"].get("quantization")
        if quantized:
            lines.append(f"- {row['variant']}: {quantized['format']}, calibrated ({quantized['calibrate_method']}) "
                         f"on {quantized['calibration_images']} images of the {quantized['calibration_split']} "
                         f"split, per-channel {quantized['per_channel']}, reduce_range {quantized['reduce_range']}.")
        pruning = row["details"].get("pruning")
        if pruning:
            lines.append(f"- {row['variant']}: MACs x{pruning['macs_ratio_reached']:.3f} (target "
                         f"{pruning['macs_ratio_target']}); top-1 {100 * pruning['test_top1_before_recovery']:.2f} % "
                         f"right after pruning, recovered by {pruning['epochs']} epochs of "
                         f"{'+'.join(pruning['loss'])} from the {pruning['teacher']} teacher.")
        qat = row["details"].get("qat")
        if qat:
            lines.append(f"- {row['variant']}: {qat['flow']}, {qat['epochs']} epochs of {'+'.join(qat['loss'])} "
                         "with the fp32 student as teacher.")
    lines += [f"- {failure['variant']} failed: {failure['error'].splitlines()[0][:300]} (versions: "
              + ", ".join(f"{k} {v}" for k, v in failure.get("versions", {}).items()) + ")" for failure in failures]
    return lines


ROLE_COLORS = {"teacher": "tab:red", "student": "tab:blue", "baseline": "tab:gray"}
MIN_ACCURACY_SPAN = 10.0  # percentage points: a y axis never magnifies differences smaller than this


def pareto_front(points: list[tuple[float, float]]) -> list[bool]:
    """For (cost, accuracy) points (latency, bytes, MACs): True where no other point costs as little or less and is
    as accurate or more, and is strictly better in one of the two."""
    return [not any(ol <= latency and oa >= accuracy and (ol < latency or oa > accuracy) for ol, oa in points)
            for latency, accuracy in points]


def accuracy_limits(values: list[float], min_span: float = MIN_ACCURACY_SPAN) -> tuple[float, float]:
    """y limits (%) holding ``values`` with a margin, at least ``min_span`` points tall, within [0, 100]:
    a 0.3-point gap between two models looks like one, not like the whole height of the plot. NaN values (a
    model that could not be scored) are left out; with none left, the whole 0-100 range."""
    values = [value for value in values if math.isfinite(value)]
    if not values:
        return 0.0, 100.0
    low, high = min(values), max(values)
    margin = max(0.15 * (high - low), 0.5)
    low, high = low - margin, high + margin
    if high - low < min_span:
        middle = (low + high) / 2
        low, high = middle - min_span / 2, middle + min_span / 2
    if high > 100:
        low, high = low - (high - 100), 100.0
    return max(0.0, low), high


def plot_accuracy_vs_macs(points: list[dict[str, Any]], path: str | Path, title: str) -> Path:
    """Top-1 accuracy against MACs per image (log x), one labelled point per model; a point that is a mean over
    seeds (``top1_std``) has its standard deviation as an error bar."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6.4, 4.4))
    for point in points:
        color = ROLE_COLORS.get(point["role"], "tab:green")
        std = point.get("top1_std")
        axes.errorbar(point["macs"], 100 * point["top1"], yerr=100 * std if std else None, fmt="o", color=color,
                      markersize=6, capsize=3, zorder=3)
        axes.annotate(point["label"], (point["macs"], 100 * point["top1"]), textcoords="offset points",
                      xytext=(5, 4), fontsize=8)
    roles = [role for role in ROLE_COLORS if any(p["role"] == role for p in points)]
    axes.legend(handles=[plt.Line2D([], [], marker="o", linestyle="", color=ROLE_COLORS[role], label=role)
                         for role in roles], fontsize=8, loc="lower right")
    axes.set_ylim(*accuracy_limits([100 * p["top1"] for p in points]))
    axes.margins(x=0.25)  # room for the labels beside the outermost points
    std_note = "; error bars: std over seeds" if any(p.get("top1_std") for p in points) else ""
    return save_log_x_plot(figure, axes, f"MACs per image (log scale){std_note}", title, path)


def format_log_x_plot(axes: Any, xlabel: str, title: str) -> None:
    """The axes of an accuracy plot: log x, the axis labels, the title, a grid."""
    axes.set_xscale("log")
    axes.set_xlabel(xlabel)
    axes.set_ylabel("test top-1 accuracy (%)")
    axes.set_title(title)
    axes.grid(True, which="both", alpha=0.3)


def save_figure(figure: Any, path: str | Path) -> Path:
    """Lay the figure out, write it as PNG atomically and close it."""
    import matplotlib.pyplot as plt

    figure.tight_layout()
    path = Path(path)
    atomic_write(path, lambda tmp: figure.savefig(tmp, format="png", dpi=120))
    plt.close(figure)
    return path


def save_log_x_plot(figure: Any, axes: Any, xlabel: str, title: str, path: str | Path) -> Path:
    """Finish an accuracy plot (``format_log_x_plot``) and save it (``save_figure``)."""
    format_log_x_plot(axes, xlabel, title)
    return save_figure(figure, path)


def write_report(report: dict[str, Any], folder: str | Path, title: str = "accuracy vs MACs") -> dict[str, Path]:
    folder = Path(folder)
    points = [{"label": p["label"], "role": p["role"], "macs": p["macs"], "top1": p["accuracy"]["top1"]}
              for p in report["models"]]
    paths = {
        "json": write_json(folder / "report.json", report),
        "markdown": atomic_write(folder / "report.md", lambda tmp: tmp.write_text(report_markdown(report))),
        "plot": plot_accuracy_vs_macs(points, folder / "accuracy_vs_macs.png", title),
    }
    log.info("efficiency report written to %s", paths["markdown"])
    return paths


def log_report(loggers: list[Any], report: dict[str, Any], plot: Path | None = None) -> None:
    """Numbers to every logger (``report/<role>/<metric>``); wandb also gets the table and the plot."""
    metrics = {}
    for p in report["models"]:
        prefix = f"report/{p['role']}"
        metrics.update({f"{prefix}/top1": p["accuracy"]["top1"], f"{prefix}/params": p["params"],
                        f"{prefix}/macs": p["macs"], f"{prefix}/bytes_fp32": p["bytes"]["fp32"],
                        f"{prefix}/latency_ms": p["speed"]["latency_ms_batch1"]["median"],
                        f"{prefix}/throughput": p["speed"]["throughput_images_per_s"]["median"]})
    for comparison in report["comparisons"]:
        # A ratio that is undefined (a 0 % teacher, an unstable timing) is not logged as a result.
        metrics.update({f"report/{name}": comparison[name] for name in
                        ("params_ratio", "macs_ratio", "accuracy_gap_points", "latency_ratio")
                        if comparison[name] is not None})
    from lightning.pytorch.loggers import WandbLogger

    for logger in loggers:
        logger.log_metrics(metrics)
        if isinstance(logger, WandbLogger):
            columns = ["model", "top1", "params", "macs", "latency_ms", "throughput"]
            data = [[p["label"], p["accuracy"]["top1"], p["params"], p["macs"],
                     p["speed"]["latency_ms_batch1"]["median"], p["speed"]["throughput_images_per_s"]["median"]]
                    for p in report["models"]]
            logger.log_table(key="report/table", columns=columns, data=data)
            logger.experiment.summary.update(metrics)
            if plot is not None:
                logger.log_image(key="report/accuracy_vs_macs", images=[str(plot)])
    log.debug("report logged: %s", ", ".join(c["summary"] for c in report["comparisons"]) or "no comparison")
