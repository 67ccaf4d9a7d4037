"""``distill-summarize <sweep folder>``: one table over a sweep's runs, seeds aggregated, plus plots.

It reads the run folders (``metrics.json``, ``report.json``, ``.hydra/``), so it works offline and
without wandb. Runs that failed are listed with their error line. A folder of another application, or a run file
that cannot be read (cut short, edited), is refused by name before anything is written into the sweep folder.
"""

from __future__ import annotations

import argparse
import csv
import io
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distill.cli import fail
from distill.errors import ConfigError
from distill.io import atomic_write, write_json
from distill.run_files import read_json_object, read_run_config, read_yaml

IGNORED_OVERRIDE_PREFIXES = ("seed=", "hydra.", "paths.", "logger", "trainer.enable_progress_bar")


# What distill-summarize reads of a run's config (a sweep's rows are grouped by them).
SUMMARY_KEYS = ("stage", "loss")


@dataclass
class RunRecord:
    folder: Path
    method: str
    overrides: list[str]
    seed: int | None
    summary: dict[str, Any] | None = None
    report: dict[str, Any] | None = None
    error: str | None = None


@dataclass
class Group:
    method: str
    overrides: str
    runs: list[RunRecord] = field(default_factory=list)


def read_run(folder: Path) -> RunRecord:
    config = read_run_config(folder, SUMMARY_KEYS)
    overrides = [str(o) for o in read_yaml(folder / ".hydra" / "overrides.yaml", list) or []]
    hydra_cfg = read_yaml(folder / ".hydra" / "hydra.yaml", dict) or {}
    choices = (hydra_cfg.get("hydra") or {}).get("runtime", {}).get("choices", {})
    stage = config.get("stage", "distill")
    method = {"student": "baseline (student alone)", "teacher": "teacher alone"}.get(stage)
    # The method is what the loss adds to cross-entropy, e.g. "fitnet+kd"; labels alone is "ce".
    terms = [name for name in (config.get("loss") or {}) if name != "ce"]
    method = method or "+".join(terms) or choices.get("loss") or "ce"
    kept = [o for o in overrides if not o.startswith(IGNORED_OVERRIDE_PREFIXES) and not o.startswith("loss=")
            and not o.startswith("stage=")]
    record = RunRecord(folder, method, kept, config.get("seed"))
    if (folder / "metrics.json").is_file():
        record.summary = read_json_object(folder / "metrics.json")
        # A scheme (distill/schemes) names its own method: "chain a>b>c kd", "mutual learning x2", ...
        record.method = (record.summary.get("scheme") or {}).get("method", record.method)
        if (folder / "report.json").is_file():
            record.report = read_json_object(folder / "report.json")
    elif (folder / "error.json").is_file():
        error = str(read_json_object(folder / "error.json").get("error") or "error.json names no error")
        record.error = (error.splitlines() or [error])[0]
    else:
        record.error = _last_error_line(folder) or "no metrics.json: the run stopped before it finished"
    return record


def _last_error_line(folder: Path) -> str | None:
    for log_file in folder.glob("*.log"):
        errors = [line for line in log_file.read_text(errors="replace").splitlines() if "ERROR" in line]
        if errors:
            return errors[-1]
    return None


def find_runs(sweep: Path) -> list[RunRecord]:
    folders = sorted({p.parent.parent for p in sweep.glob("**/.hydra/config.yaml")},
                     key=lambda p: (len(p.parts), int(p.name) if p.name.isdigit() else p.name))
    if not folders:
        raise ConfigError(f"{sweep} holds no runs (no */.hydra/config.yaml); give a Hydra sweep folder such as "
                          "outputs/multirun/<date_time>")
    return [read_run(folder) for folder in folders]


def _mean_std(values: list[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def _summary(record: RunRecord) -> dict[str, Any]:
    """The run's metrics.json, which every record without an error has (see read_run)."""
    assert record.summary is not None, f"{record.folder} has no metrics.json"
    return record.summary


def _model_profile(report: dict | None, role: str) -> dict | None:
    if not report:
        return None
    return next((m for m in report.get("models", []) if m.get("role") == role), None)


def summarize_groups(records: list[RunRecord]) -> list[dict[str, Any]]:
    """One row per (method, overrides); overrides shared by every run are left out of the label."""
    shared = set.intersection(*(set(r.overrides) for r in records)) if records else set()
    groups: dict[tuple[str, str], Group] = {}
    for record in records:
        if record.error:
            continue
        key = (record.method, " ".join(o for o in record.overrides if o not in shared))
        groups.setdefault(key, Group(*key)).runs.append(record)
    rows = []
    for group in groups.values():
        student_role = "baseline" if group.method.startswith("baseline") else "student"
        students = [_summary(r).get("student", {}).get("test_acc_top1") for r in group.runs]
        # The teacher's accuracy as the report measured it (live, full precision), else the run's own.
        teachers = [(_model_profile(r.report, "teacher") or {}).get("accuracy", {}).get("top1")
                    or _summary(r).get("teacher", {}).get("test_acc_top1") for r in group.runs]
        students = [100 * v for v in students if v is not None]
        teachers = [100 * v for v in teachers if v is not None]
        profiles = [p for p in (_model_profile(r.report, student_role) for r in group.runs) if p]
        latencies = [p["speed"]["latency_ms_batch1"]["median"] for p in profiles]
        top1, top1_std = _mean_std(students)
        teacher_top1, _ = _mean_std(teachers)
        rows.append({
            "method": group.method,
            "overrides": group.overrides,
            "seeds": len(group.runs),
            "student_top1_mean": top1,
            "student_top1_std": top1_std,
            "teacher_top1": teacher_top1,
            "gap_points": top1 - teacher_top1 if top1 is not None and teacher_top1 is not None else None,
            "params": profiles[0]["params"] if profiles else None,
            "macs": profiles[0]["macs"] if profiles else None,
            "latency_ms": statistics.median(latencies) if latencies else None,
            "variants": summarize_variants([r.report for r in group.runs if r.report]),
            "runs": [str(r.folder) for r in group.runs],
        })
    return sorted(rows, key=lambda row: -(row["student_top1_mean"] or 0))


def summarize_variants(reports: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The deployable variants of a group's runs (distill/compress), seeds aggregated like the student's."""
    by_name: dict[str, list[dict[str, Any]]] = {}
    for report in reports:
        for row in report.get("variants", []):
            by_name.setdefault(row["variant"], []).append(row)
    summary = []
    for name, rows in by_name.items():
        top1, top1_std = _mean_std([100 * row["accuracy"]["top1"] for row in rows])
        summary.append({"variant": name, "runtime": rows[0]["runtime"], "runs": len(rows), "top1_mean": top1,
                        "top1_std": top1_std, "bytes": statistics.median(row["bytes"] for row in rows),
                        "macs": rows[0]["macs"],
                        "latency_ms": statistics.median(row["speed"]["latency_ms_batch1"]["median"] for row in rows)})
    return summary


def variants_table(rows: list[dict[str, Any]]) -> list[str]:
    """One line per (method, variant) for the groups whose runs were compressed; empty when none were."""
    lines = []
    for row in rows:
        for variant in row.get("variants", []):
            lines.append(
                f"| {row['method']} | {row['overrides'] or '—'} | {variant['variant']} | {variant['runtime']} | "
                f"{variant['runs']} | {_fmt(variant['top1_mean'])} ± {_fmt(variant['top1_std'])} | "
                f"{variant['bytes'] / 1024:,.1f} KiB | {variant['macs']:,} | {variant['latency_ms']:.3f} |")
    if not lines:
        return []
    return ["", "Deployable variants (distill/compress):", "",
            "| method | overrides | variant | runtime | runs | top-1 (%) | file | MACs | latency b=1 (ms) |",
            "|---|---|---|---|---:|---:|---:|---:|---:|", *lines]


def _fmt(value: Any, pattern: str = "{:.2f}") -> str:
    return "n/a" if value is None else pattern.format(value)


def markdown_table(rows: list[dict[str, Any]], failures: list[RunRecord]) -> str:
    lines = ["| method | overrides | seeds | student top-1 (%) | teacher top-1 (%) | gap (points) | params | "
             "MACs | latency b=1 (ms) |", "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for row in rows:
        lines.append(
            f"| {row['method']} | {row['overrides'] or '—'} | {row['seeds']} | "
            f"{_fmt(row['student_top1_mean'])} ± {_fmt(row['student_top1_std'])} | {_fmt(row['teacher_top1'])} | "
            f"{_fmt(row['gap_points'], '{:+.2f}')} | {_fmt(row['params'], '{:,}')} | {_fmt(row['macs'], '{:,}')} | "
            f"{_fmt(row['latency_ms'], '{:.3f}')} |"
        )
    lines += variants_table(rows)
    if failures:
        lines += ["", f"Failed runs ({len(failures)}):", ""]
        lines += [f"- `{r.folder.name}` ({' '.join(r.overrides) or r.method}): {r.error}" for r in failures]
    return "\n".join(lines) + "\n"


def csv_text(rows: list[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    columns = [c for c in rows[0] if c not in ("runs", "variants")] if rows else ["method"]
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def plot_methods(rows: list[dict[str, Any]], path: Path) -> Path:
    """Student top-1 per method (mean ± std over seeds)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from distill.report import accuracy_limits, save_figure  # imports torch: only when plotting

    # Points with error bars, not bars: a bar's length reads as the value, which a y axis that does not start
    # at 0 would misstate; points on a stated range do not.
    labels = [f"{r['method']}\n{r['overrides'][:40]}".strip() for r in rows]
    figure, axes = plt.subplots(figsize=(max(6.0, 0.9 * len(rows) + 2), 4.6))
    shown = [(i, r) for i, r in enumerate(rows) if r["student_top1_mean"] is not None]
    axes.errorbar([i for i, _ in shown], [r["student_top1_mean"] for _, r in shown],
                  yerr=[r["student_top1_std"] or 0 for _, r in shown], fmt="o", capsize=4, color="tab:blue",
                  label="student: mean ± std over seeds")
    teacher = next((r["teacher_top1"] for r in rows if r["teacher_top1"] is not None), None)
    if teacher is not None:
        axes.axhline(teacher, color="tab:red", linestyle="--", label=f"teacher {teacher:.2f} %")
    spread = [r["student_top1_mean"] + sign * (r["student_top1_std"] or 0) for _, r in shown for sign in (-1, 1)]
    if spread:
        axes.set_ylim(*accuracy_limits(spread + ([teacher] if teacher is not None else [])))
    axes.legend(fontsize=8, loc="lower right")
    axes.set_xticks(range(len(rows)), labels, rotation=30, ha="right", fontsize=8)
    axes.set_ylabel("student test top-1 (%)")
    seeds = sorted({r["seeds"] for r in rows if r.get("seeds")})
    axes.set_title("student accuracy per method" + (f" ({'/'.join(map(str, seeds))} seeds each)" if seeds else ""))
    axes.grid(True, axis="y", alpha=0.3)
    return save_figure(figure, path)


def check_sweep_folder(sweep: Path) -> None:
    """Refuse a sweep path that is missing or a file (the summary is written into the sweep folder)."""
    hint = "give a Hydra sweep folder such as outputs/multirun/<date_time>"
    if not sweep.exists():
        raise ConfigError(f"{sweep} holds no runs: it does not exist; {hint}")
    if not sweep.is_dir():
        raise ConfigError(f"{sweep} is a file, not a folder; {hint}")


def summarize_sweep(sweep: Path, output: Path | None = None) -> dict[str, Any]:
    sweep = Path(sweep).expanduser()
    check_sweep_folder(sweep)
    output = Path(output).expanduser() if output else sweep
    if output.exists() and not output.is_dir():
        raise ConfigError(f"--output {output} is a file, not a folder; give the folder to write the summary into")
    records = find_runs(sweep)
    failures = [r for r in records if r.error]
    rows = summarize_groups(records)
    table = markdown_table(rows, failures)
    points = [{"label": row["method"], "role": "baseline" if row["method"].startswith("baseline") else "student",
               "macs": row["macs"], "top1": row["student_top1_mean"] / 100,
               "top1_std": (row["student_top1_std"] or 0) / 100} for row in rows
              if row["macs"] and row["student_top1_mean"] is not None]
    teacher_profiles = [_model_profile(r.report, "teacher") for r in records if r.report]
    teacher = next((p for p in teacher_profiles if p), None)
    if teacher:
        points.append({"label": f"teacher: {teacher['architecture']}", "role": "teacher", "macs": teacher["macs"],
                       "top1": teacher["accuracy"]["top1"]})
    files = {
        "markdown": atomic_write(output / "summary.md", lambda tmp: tmp.write_text(table)),
        "csv": atomic_write(output / "summary.csv", lambda tmp: tmp.write_text(csv_text(rows))),
        "json": write_json(output / "summary.json", {"rows": rows, "failed": [
            {"folder": str(r.folder), "overrides": r.overrides, "error": r.error} for r in failures]}),
    }
    variant_rows = [{"method": row["method"], "overrides": row["overrides"], **variant}
                    for row in rows for variant in row["variants"]]
    if variant_rows:
        files["variants_csv"] = atomic_write(output / "summary_variants.csv",
                                             lambda tmp: tmp.write_text(csv_text(variant_rows)))
    if rows:
        files["methods_plot"] = plot_methods(rows, output / "summary_methods.png")
    if points:
        from distill.report import plot_accuracy_vs_macs  # imports torch: only once the runs were read

        files["macs_plot"] = plot_accuracy_vs_macs(points, output / "summary_accuracy_vs_macs.png",
                                                   "sweep: accuracy vs MACs")
    return {"rows": rows, "failures": failures, "table": table, "files": files, "runs": len(records)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="distill-summarize", description=__doc__.splitlines()[0])
    parser.add_argument("sweep", type=Path, help="a Hydra sweep folder, e.g. outputs/multirun/<date_time>")
    parser.add_argument("--output", type=Path, default=None, help="where to write (default: the sweep folder)")
    args = parser.parse_args(argv)
    try:
        result = summarize_sweep(args.sweep, args.output)
    except ConfigError as error:
        fail(error)
    print(result["table"])
    print(f"{result['runs']} runs, {len(result['failures'])} failed; wrote "
          + ", ".join(str(p) for p in result["files"].values()))
    if result["failures"] and not result["rows"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
