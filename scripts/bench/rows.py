"""The rows of a benchmark's out-dir: which seeds have finished, the table rows read back from them (with their
deployed students' sizes), rows that cannot run here, and the optional rows of the student alone at the size of
a row whose deployed student is larger (the methods command, methods.py, trains and publishes them)."""

from __future__ import annotations

import math
from pathlib import Path

from distill.io import read_json
from scripts.bench.doc import BASELINE, BOTH, MATCHED, MethodRuns, larger, matched_name
from scripts.bench.fit import train_top1
from scripts.bench.grid import Method, folder_name
from scripts.bench.results import closest_width, deployed_size, width_form


def finished_seeds(folder: Path, seeds: int) -> list[int]:
    return [seed for seed in range(seeds) if (folder / str(seed) / "metrics.json").is_file()]


def config_error(folder: Path) -> str:
    """The configuration error with which every seed in ``folder`` stopped before training, or "" (some seed
    trained, or another error: a crash is a failure to look into, not a method that cannot fit the setting)."""
    seeds = sorted(folder.glob("[0-9]*"))
    if not seeds or any((seed / "metrics.json").is_file() or not (seed / "error.json").is_file() for seed in seeds):
        return ""
    messages = {read_json(seed / "error.json").get("error", "") for seed in seeds}
    message = messages.pop() if len(messages) == 1 else ""
    return message.removeprefix("ConfigError: ") if message.startswith("ConfigError: ") else ""


def collect(methods: list[Method], out_dir: Path) -> list[MethodRuns]:
    """The rows with runs in ``out_dir``, with their deployed students' sizes; a row that cannot run here, or that
    records.json says was trained but whose runs are gone, as a row without numbers that says so."""
    records = read_json(out_dir / "records.json") if (out_dir / "records.json").is_file() else {}
    rows = []
    for method in methods:
        folder = out_dir / folder_name(method.name)
        paths = sorted(folder.glob("*/metrics.json"))
        summaries = [read_json(path) for path in paths]
        record = records.get(method.name, {})
        if summaries:
            row = MethodRuns.from_summaries(method.name, " ".join(method.overrides), summaries, record, method.note)
            row.run_dirs = [path.parent for path in paths]
            sizes = [deployed_size(run_dir) for run_dir in row.run_dirs]
            row.params = [params for params, _ in sizes if params is not None]
            row.macs = [macs for _, macs in sizes if macs is not None]
            row.train_top1 = [top1 for top1 in map(train_top1, row.run_dirs) if top1 is not None]
            rows.append(row)
        elif reason := config_error(folder):
            rows.append(MethodRuns(method.name, " ".join(method.overrides), record=record, note=method.note,
                                   not_applicable=reason))
        elif record:
            rows.append(MethodRuns(
                method.name, " ".join(method.overrides), record=record, note=method.note,
                no_runs=f"records.json has its training (commit `{record.get('commit', 'unknown')}`, exit "
                        f"{record.get('returncode', 'unknown')}, finished {record.get('finished_at', 'unknown')}), "
                        f"but no seed of it finished here: {folder.name}/ holds no metrics.json"))
    return rows


def matched_rows(rows: list[MethodRuns]) -> list[Method]:
    """Optional rows, trained only when --methods names them: for each row whose deployed student is larger than
    the student alone's (SimKD's carries a projector and the teacher's classifier), the student alone at the width
    closest to it in parameters, and at the width closest in MACs. That row's gain over the student alone is not a
    gain at equal size; its gain over these is. None where the student alone has no ``width`` to change or no
    run_config.json to read."""
    baseline = next((r for r in rows if r.method == BASELINE and r.macs), None)
    if baseline is None:
        return []
    configs = [read_json(d / "run_config.json") for d in baseline.run_dirs if (d / "run_config.json").is_file()]
    student = width_form(configs[0]["student"]) if configs else None
    if student is None:
        return []
    config = {**configs[0], "student": student}
    methods = []
    for row in (r for r in rows if larger(r, baseline)):
        targets = {measure: max(values) for measure in MATCHED if (values := getattr(row, measure))}
        closest = {measure: closest_width(config, measure, target) for measure, target in targets.items()}
        # One row where one width is the closest in both measures (the same network would train twice).
        widths = {width for width, _ in closest.values()}
        groups = {BOTH: list(closest)} if len(closest) > 1 and len(widths) == 1 else {m: [m] for m in closest}
        for name, measures in groups.items():
            width, size = closest[measures[0]]
            matched = " and in ".join(f"{MATCHED[m]} ({targets[m]:,})" for m in measures)
            # A step costs less than its MACs say at this size (fixed per-step overheads): the width-16 student's
            # 3.8x the MACs cost about 2 width-8 steps (grid.SCHEME_COST), about the square root.
            methods.append(Method(
                matched_name(row.method, name), ["stage=student", *student_overrides(configs[0], student, width)],
                student_steps=math.sqrt(size.macs / max(baseline.macs)), teacher_forwards=0,
                note=f"{student['name']} width {width}: {size.params:,} parameters, "
                     f"{size.macs / 1e6:.2f} M MACs, the width closest to {row.method}'s deployed student in "
                     f"{matched}"))
    return methods


def student_overrides(config: dict, student: dict, width: int) -> list[str]:
    """The overrides that make the run's student ``student`` (its width form) at ``width``."""
    if student["name"] == config["student"]["name"]:
        return [f"student.kwargs.width={width}"]
    kwargs = {**student["kwargs"], "width": width}
    return [f"student.name={student['name']}", *(f"++student.kwargs.{key}={value}" for key, value in kwargs.items())]
