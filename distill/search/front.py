"""A search's results: every finished trial as a CSV row, and the Pareto front of validation accuracy against the
budget metric as a table and a plot, with the default student and the teacher marked."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from distill.io import atomic_write
from distill.report import format_log_x_plot, pareto_front, save_figure

COLUMNS = ("trial", "candidate", "training", "state", "val_acc_top1", "epochs", "macs", "params", "bytes",
           "latency_ms", "within_budget", "pareto")
METRIC_LABELS = {"latency_ms": "batch-1 latency (ms)", "bytes": "deployable file (bytes)", "macs": "MACs"}


def mark_front(rows: list[dict[str, Any]], metric: str) -> list[dict[str, Any]]:
    """``pareto`` on each row: a completed trial within budget that no other one beats on both accuracy and cost."""
    scored = [row for row in rows if row["val_acc_top1"] is not None and row["within_budget"]]
    front = pareto_front([(float(row[metric]), float(row["val_acc_top1"])) for row in scored])
    on_front = {row["trial"] for row, best in zip(scored, front) if best}
    return [{**row, "pareto": row["trial"] in on_front} for row in rows]


def write_csv(rows: list[dict[str, Any]], path: Path) -> Path:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({**row, "training": " ".join(f"{k}={v}" for k, v in row["training"].items())})
    return atomic_write(path, lambda tmp: tmp.write_text(buffer.getvalue()))


def front_table(rows: list[dict[str, Any]], metric: str) -> str:
    """Markdown: the Pareto front, cheapest first."""
    front = sorted((row for row in rows if row.get("pareto")), key=lambda row: float(row[metric]))
    lines = ["| trial | student | training | val top-1 (%) | MACs | parameters | bytes | latency (ms) |",
             "|---|---|---|---|---|---|---|---|"]
    for row in front:
        training = " ".join(f"{k}={v}" for k, v in row["training"].items()) or "—"
        lines.append(f"| {row['trial']} | {row['candidate']} | {training} | {100 * row['val_acc_top1']:.2f} | "
                     f"{row['macs']:,} | {row['params']:,} | {row['bytes']:,} | {row['latency_ms']:.4f} |")
    return "\n".join(lines)


def plot_front(rows: list[dict[str, Any]], metric: str, limit: float | None,
               marks: dict[str, tuple[float, float]], path: Path) -> Path:
    """Validation top-1 against the budget metric: every trained trial, the front joined, the limit as a line;
    ``marks``: named reference points (the default student, the teacher) as (cost, accuracy)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4.5))
    trained = [row for row in rows if row["val_acc_top1"] is not None]
    axes.scatter([row[metric] for row in trained], [100 * row["val_acc_top1"] for row in trained], s=14,
                 color="0.6", label="trials")
    front = sorted((row for row in trained if row.get("pareto")), key=lambda row: float(row[metric]))
    axes.plot([row[metric] for row in front], [100 * row["val_acc_top1"] for row in front], "o-", color="C0",
              label="Pareto front")
    for index, (name, (cost, accuracy)) in enumerate(marks.items()):
        axes.scatter([cost], [100 * accuracy], marker="*", s=120, color=f"C{index + 1}", label=name, zorder=3)
    if limit is not None:  # the limit on the plotted metric (other limits are not drawn)
        axes.axvline(limit, color="C3", linestyle="--", linewidth=1, label="budget")
    format_log_x_plot(axes, METRIC_LABELS[metric], "search: validation top-1 vs " + METRIC_LABELS[metric])
    axes.set_ylabel("validation top-1 (%)")
    axes.legend(fontsize=8)
    return save_figure(figure, path)
