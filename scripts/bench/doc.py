"""The method table's section of a benchmark document (``python -m scripts.bench methods``): the table with
intervals and the deployed students' sizes, which differences are real, every row's curve, how it was made.

Each out-dir (one setting: its setting.json) owns one section of the document, between the markers
``<!-- method-table:<out-dir name>:start -->`` and ``<!-- method-table:<out-dir name>:end -->``; the rest (what the
columns mean, what the tables show, other benchmarks) is written by hand and kept as it is.
"""

from __future__ import annotations

import csv
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distill.io import atomic_write
from scripts.bench.grid import TEACHER_FOLDER
from scripts.bench.stats import Interval, gap_closed, mean_std, real_differences, welch_interval

BASELINE = "student alone"
# The optional rows that train the student alone at a larger row's size, matched on each of these measures.
MATCHED = {"params": "parameters", "macs": "MACs"}
# The one optional row for both measures, where the same width is the closest in parameters and in MACs.
BOTH = "size"
LARGER = "†"  # marks a row whose deployed student is larger than the student alone's


@dataclass
class MethodRuns:
    """One row's runs: test top-1 (%) at the best validation epoch and at the last epoch, per seed."""

    method: str
    overrides: str
    best: list[float] = field(default_factory=list)
    last: list[float] = field(default_factory=list)
    val_best: list[float] = field(default_factory=list)  # best validation top-1 per seed (chooses, never tests)
    seconds: list[float] = field(default_factory=list)
    record: dict[str, Any] = field(default_factory=dict)
    note: str = ""
    failed: bool = False
    # Why no seed could start on this setting (the config error every seed stopped with), e.g. a loss that needs
    # equal channel counts under a student narrower than its teacher: shown as a row, never as a number.
    not_applicable: str = ""
    # Why a row that records.json says was trained has no finished run here (its runs were not kept): a row, not
    # a silent gap.
    no_runs: str = ""
    run_dirs: list[Path] = field(default_factory=list)  # the seeds' run folders (their csv/metrics.csv)
    # The deployed student's size per seed (the exported network: SimKD's includes its projector and the
    # teacher's classifier); a seed whose files cannot say is left out.
    params: list[int] = field(default_factory=list)
    macs: list[int] = field(default_factory=list)
    # Training top-1 (%) at the last epoch per seed: below the student alone's, the row's terms took capacity
    # from fitting the labels (the rule for a second row at a weight chosen on validation).
    train_top1: list[float] = field(default_factory=list)

    @classmethod
    def from_summaries(cls, method: str, overrides: str, summaries: list[dict[str, Any]], record: dict[str, Any],
                       note: str = "") -> MethodRuns:
        row = cls(method, overrides, record=record, note=note, failed=record.get("returncode", 0) != 0)
        for summary in summaries:
            best = (summary.get("student") or {}).get("test_acc_top1")
            last = (summary.get("metrics") or {}).get("test_last/acc_top1")
            if best is not None:
                row.best.append(100 * best)
            if last is not None:
                row.last.append(100 * last)
            if summary.get("monitored") is not None:
                row.val_best.append(100 * summary["monitored"])
            if summary.get("seconds") is not None:
                row.seconds.append(summary["seconds"])
        return row


def document_for(out_dir: Path, default_out_dir: Path, mini: bool, published: Path) -> Path:
    """Where a command's section goes: the published document for its default folder only. Runs into another
    --out-dir (a longer schedule, a miniature) write beside the runs, so they never replace the published table."""
    if mini or out_dir.resolve() != default_out_dir.resolve():
        return out_dir / "benchmarks.md"
    return published


def plus_minus(values: list[float]) -> str:
    """"84.89 ± 0.08": mean and sample std over seeds, or n/a."""
    mean, std = mean_std(values)
    return "n/a" if mean is None else f"{mean:.2f} ± {std:.2f}"


def interval_text(interval: Interval) -> str:
    """"+1.83 [+1.65, +2.01] *": the estimate, its 95 % interval, a star where the interval excludes 0."""
    return f"{interval.estimate:+.2f} [{interval.low:+.2f}, {interval.high:+.2f}]{' *' * interval.excludes_zero}"


def seeds_text(rows: list[MethodRuns]) -> str:
    counts = sorted({len(r.best) for r in rows if r.best}) or [0]
    return f"{counts[0]} seeds" if len(counts) == 1 else f"{counts[0]}–{counts[-1]} seeds"


def matched_name(method: str, measure: str) -> str:
    """The optional row of the student alone at ``method``'s size in ``measure`` (a key of MATCHED, or BOTH)."""
    return f"{BASELINE} matched {method} {measure}"


def matched_row(by_name: dict[str, MethodRuns], method: str, measure: str) -> MethodRuns | None:
    """The row of the student alone matched to ``method`` in ``measure``: its own, or the one for both."""
    return by_name.get(matched_name(method, measure)) or by_name.get(matched_name(method, BOTH))


def is_matched(row: MethodRuns) -> bool:
    return row.method.startswith(f"{BASELINE} matched ")


def larger(row: MethodRuns, baseline: MethodRuns | None) -> bool:
    """Whether the row's deployed student has more parameters or MACs than the student alone's. A matched row is
    larger by design: it is the comparison at that size, not a method."""
    if baseline is None or row is baseline or is_matched(row):
        return False
    return any(mine and theirs and max(mine) > max(theirs)
               for mine, theirs in ((row.params, baseline.params), (row.macs, baseline.macs)))


def size_text(values: list[int], unit: float = 1, digits: int = 0, suffix: str = "") -> str:
    """"54,850" or "2.82 M"; a range where seeds differ; n/a where no seed says."""
    texts = [f"{value / unit:,.{digits}f}{suffix}" for value in sorted({min(values), max(values)})] if values else []
    return "–".join(texts) or "n/a"


def method_table(rows: list[MethodRuns], teacher_top1: float | None,
                 published: dict[str, float] | None = None) -> str:
    """The markdown table, best-epoch mean first; the deployed student's size, marked where larger than alone.

    No rank column: which rows differ is what the Welch intervals say, pair by pair (differences_text).
    ``published``: the papers' numbers per row, shown in their own column (CIFAR-100's CRD setting).
    """
    baseline = next((r for r in rows if r.method == BASELINE), None)
    lines = ["| method | seeds | top-1 best val epoch (%) | top-1 last epoch (%) | gain over student alone "
             "(best, 95 % CI) | gap closed | train top-1 last epoch (%) | parameters | MACs | time / run | commit |"
             + (" published (%) |" if published else ""),
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|" + ("---:|" if published else "")]
    for row in sorted(rows, key=lambda r: -(mean_std(r.best)[0] or 0)):
        commit = f"`{row.record.get('commit', 'unknown')}`"
        if row.not_applicable or row.no_runs:
            why = "cannot run here" if row.not_applicable else "no kept runs"
            lines.append(f"| {row.method} | 0 | — | — | {why} (below) | — | — | — | — | — | {commit} |"
                         + (" — |" if published else ""))
            continue
        gain = welch_interval(row.best, baseline.best) if baseline and row is not baseline else None
        gain_text = "—" if row is baseline else "n/a (< 2 seeds)"
        if gain is not None:
            gain_text = interval_text(gain)
        closed = gap_closed(mean_std(row.best)[0], mean_std(baseline.best)[0] if baseline else None, teacher_top1)
        time_text = f"{statistics.median(row.seconds) / 60:.1f} min" if row.seconds else "n/a"
        closed_text = "—" if closed is None else f"{closed:.2f}"
        mark = f" {LARGER}" if larger(row, baseline) else ""
        lines.append(f"| {row.method} | {len(row.best)} | {plus_minus(row.best)} | {plus_minus(row.last)} | "
                     f"{gain_text} | {closed_text} | {plus_minus(row.train_top1)} | {size_text(row.params)}{mark} | "
                     f"{size_text(row.macs, 1e6, 2, ' M')}{mark} | {time_text} | {commit} |"
                     + (f" {published[row.method]:.2f} |" if published and row.method in published else
                        " — |" if published else ""))
    return "\n".join(lines) + "\n"


def ratio_text(mine: list[int], theirs: list[int], what: str) -> str:
    return f"{max(mine) / max(theirs):.1f}x the {what}" if mine and theirs else f"{what} n/a"


def larger_text(rows: list[MethodRuns], optional: Sequence[str] = ()) -> list[str]:
    """Under the table: the rows marked larger, how much larger, and their gain over the student alone at matched
    size (the optional matched rows), or how to train that comparison (``optional``: the names of those rows,
    rows.matched_rows)."""
    baseline = next((r for r in rows if r.method == BASELINE), None)
    marked = [r for r in rows if larger(r, baseline)]
    if baseline is None or not marked:
        return []
    by_name = {r.method: r for r in rows}
    lines = [f"{LARGER} The deployed student (what the run exports and measures) is larger than the student "
             f"alone's ({size_text(baseline.params)} parameters, {size_text(baseline.macs, 1e6, 2, ' M')} MACs): "
             "the row's gain over the student alone is not a gain at equal size.", ""]
    for row in marked:
        sizes = (f"{ratio_text(row.params, baseline.params, 'parameters')}, "
                 f"{ratio_text(row.macs, baseline.macs, 'MACs')}")
        matched = []
        measures_of: dict[str, list[str]] = {}  # each matched row's measures: one line for a row shared by both
        for measure, what in MATCHED.items():
            if other := matched_row(by_name, row.method, measure):
                measures_of.setdefault(other.method, []).append(what)
        for name, whats in measures_of.items():
            other, what = by_name[name], " and ".join(whats)
            gain = welch_interval(row.best, other.best)
            if gain:
                matched.append(f"{interval_text(gain)} over the student alone of matched {what} "
                               f"({size_text(other.params)} parameters, {size_text(other.macs, 1e6, 2, ' M')} MACs)")
        missing = [f'"{name}"' for name in optional
                   if name.startswith(matched_name(row.method, "")) and name not in by_name]
        lines.append(f"- **{row.method}** ({sizes}): " + "; ".join(
            matched + ([f"the student alone at matched size is not trained: add `--methods {' '.join(missing)}` "
                        "to the command under *How this table was made* (optional rows of `--plan`)"]
                       if missing else [])
            + ([] if matched or missing else ["no row of the student alone at matched size (its network has no "
                                              "width to change)"])) + ".")
    return [*lines, ""]


def differences_text(rows: list[MethodRuns]) -> list[str]:
    """Which rows differ from the student alone, and from each other, by more than their 95 % interval."""
    baseline = next((r for r in rows if r.method == BASELINE), None)
    if baseline is None or len(baseline.best) < 2:
        return ["The student alone has fewer than 2 finished seeds: no interval can be computed yet."]
    above: list[str] = []
    below: list[str] = []
    unresolved: list[str] = []
    for row in rows:
        gain = welch_interval(row.best, baseline.best) if row is not baseline else None
        if gain is None:
            continue
        text = f"{row.method} ({gain.estimate:+.2f} [{gain.low:+.2f}, {gain.high:+.2f}])"
        (above if gain.low > 0 else below if gain.high < 0 else unresolved).append(text)
    pairs = real_differences({r.method: r.best for r in rows if r.method != BASELINE and len(r.best) > 1})
    return [
        f"- **Better than the student alone** (interval above 0): {', '.join(above) or 'none'}.",
        f"- **Worse than the student alone** (interval below 0): {', '.join(below) or 'none'}.",
        f"- **Not distinguishable from the student alone** (interval contains 0): {', '.join(unresolved) or 'none'}.",
        f"- Between methods, {len(pairs)} ordered pair(s) are separated by their 95 % Welch interval"
        + (": " + "; ".join(f"{a} > {b} ({i.estimate:+.2f} [{i.low:+.2f}, {i.high:+.2f}])" for a, b, i in pairs[:15])
           + (" …" if len(pairs) > 15 else "") if pairs else "") + ".",
    ]


def not_applicable_text(rows: list[MethodRuns]) -> list[str]:
    """One bullet per row that stopped before training on every seed, with the error it stopped with."""
    return [f"- **{r.method}**: {r.not_applicable}" for r in rows if r.not_applicable]


def no_runs_text(rows: list[MethodRuns]) -> list[str]:
    """One bullet per row that was trained (records.json) but has no finished run here."""
    return [f"- **{r.method}**: {r.no_runs}" for r in rows if r.no_runs]


def learning_curve(folders: list[Path], metric: str = "val/acc_top1") -> list[tuple[int, float, float]]:
    """(epoch, mean, std) of ``metric`` over the runs' csv/metrics.csv (Lightning's CSVLogger), in %."""
    by_epoch: dict[int, list[float]] = {}
    for folder in folders:
        path = folder / "csv" / "metrics.csv"
        if not path.is_file():
            continue
        with path.open() as handle:
            for line in csv.DictReader(handle):
                if line.get(metric):
                    by_epoch.setdefault(int(line["epoch"]), []).append(100 * float(line[metric]))
    curve = []
    for epoch, values in sorted(by_epoch.items()):
        mean, std = mean_std(values)
        assert mean is not None and std is not None  # every epoch here has at least one value
        curve.append((epoch, mean, std))
    return curve


def curves_table(rows: list[MethodRuns], epochs: int) -> list[str]:
    """Each row's mean validation top-1 at a quarter, half, three quarters and the end of the schedule: whether a
    lead is kept to the end or only reached sooner (then the student alone catches up as the rate anneals)."""
    marks = sorted({max(1, round(epochs * q)) for q in (0.25, 0.5, 0.75, 1.0)})
    lines = ["| method | " + " | ".join(f"epoch {m}" for m in marks) + " |", "|---|" + "---:|" * len(marks)]
    for row in sorted(rows, key=lambda r: -(mean_std(r.best)[0] or 0)):
        by_epoch = {epoch + 1: mean for epoch, mean, _ in learning_curve(row.run_dirs)}
        if by_epoch:
            lines.append(f"| {row.method} | "
                         + " | ".join(f"{by_epoch[m]:.2f}" if m in by_epoch else "—" for m in marks) + " |")
    return lines


def section_name(out_dir: Path) -> str:
    """The name of an out-dir's section: its folder's name, with its parent's for one teacher of a setting with
    several (benchmark_strong/teacher_seed0), so that two settings' teacher folders never share a section."""
    return f"{out_dir.parent.name}/{out_dir.name}" if out_dir.name.startswith(TEACHER_FOLDER) else out_dir.name


def schedule_of_baseline(method: str) -> bool:
    """The student alone, or the student alone on another schedule ("student alone, 60 epochs"); not the
    matched-size rows (another student)."""
    return method == BASELINE or method.startswith(BASELINE + ",")


def plateau_table(rows: list[MethodRuns], every: int = 5) -> list[str]:
    """The student-alone rows' validation top-1 (mean ± std over seeds) every ``every`` epochs to each one's end:
    where the student's curve levels off, so that a distilled row's gain is read against a student that has
    stopped improving, not one that was stopped early. Empty when no such row has curves."""
    curves = {row.method: {epoch + 1: (mean, std) for epoch, mean, std in learning_curve(row.run_dirs)}
              for row in rows if schedule_of_baseline(row.method)}
    curves = {name: curve for name, curve in curves.items() if curve}
    if not curves:
        return []
    last = max(max(curve) for curve in curves.values())
    marks = [1, *range(every, last + 1, every)] + ([last] if last % every else [])
    lines = ["| epoch | " + " | ".join(curves) + " |", "|---:|" + "---:|" * len(curves)]
    for mark in marks:
        cells = [f"{curve[mark][0]:.2f} ± {curve[mark][1]:.2f}" if mark in curve else "" for curve in curves.values()]
        lines.append(f"| {mark} | " + " | ".join(cells) + " |")
    return lines


def markers(section: str) -> tuple[str, str]:
    """The lines that open and close the section of the out-dir named ``section``."""
    return f"<!-- method-table:{section}:start -->", f"<!-- method-table:{section}:end -->"


def section_text(rows: list[MethodRuns], teacher: dict[str, Any], command: str, setting: dict[str, Any]) -> str:
    """One setting's part of the document: what it is, the table, what is real, the curves, how it was made."""
    teacher_info = teacher.get("teacher") or {}
    teacher_top1 = 100 * teacher_info["test_acc_top1"] if teacher_info.get("test_acc_top1") is not None else None
    published = setting.get("published") or {}
    table = method_table(rows, teacher_top1, published)
    baseline = next((r for r in rows if r.method == BASELINE), None)
    commits = sorted({r.record.get("commit", "unknown") for r in rows})
    not_applicable, no_runs = not_applicable_text(rows), no_runs_text(rows)
    extra = " ".join(f"`{override}`" for override in setting.get("extra") or [])
    plateau = plateau_table(rows) if sum(schedule_of_baseline(r.method) for r in rows) > 1 else []
    lines = [
        f"## {setting.get('title') or setting['data'] + ', ' + str(setting['epochs']) + ' epochs'}",
        "",
        f"`experiment={setting['experiment']}`" + (f" with {extra}" if extra else "") + ": teacher "
        f"`{teacher_info.get('architecture')}` ({teacher_info.get('params') or 0:,} parameters, "
        f"{setting['teacher_epochs']} epochs, cached) at **{'n/a' if teacher_top1 is None else f'{teacher_top1:.2f}'}"
        " %** test top-1" + (f" (published: {published['teacher']:.2f} %)" if "teacher" in published else "")
        + f"; student alone **{plus_minus(baseline.best) if baseline else 'n/a'} %**; {setting['epochs']} student "
        f"epochs, {seeds_text(rows)} per row.",
        "",
        table,
        *larger_text(rows, setting.get("optional") or ()),
        "### Which differences are real",
        "",
        *differences_text(rows),
        "",
        *setting.get("tuned_lines", []),  # the weights chosen on validation (tuned.section_text)
        *(["### Rows this setting cannot run", "",
           "Every seed stopped before training with the configuration error quoted; nothing was changed to make "
           "them run:", "", *not_applicable, ""] if not_applicable else []),
        *(["### Rows with no kept runs", "",
           "Trained (records.json names the commit and command) but none of their runs is here, so they have no "
           "numbers; the command under *How this table was made* trains them again:", "", *no_runs, ""]
          if no_runs else []),
        "### Every row during training",
        "",
        "Validation top-1 (%), mean over seeds, at four points of the schedule:",
        "",
        *curves_table(rows, setting["epochs"]),
        "",
        *(["### Where the student alone levels off", "",
           "Validation top-1 (%) of the student-alone rows (mean ± std over seeds), each to the end of its own "
           "schedule (the cosine rate reaches 0 at each one's last epoch):", "", *plateau, ""] if plateau else []),
        "### How this table was made",
        "",
        f"- command: `{command}` (resumable: the same command trains only the runs that are missing)",
        f"- commits: {', '.join(f'`{c}`' for c in commits)} (per row in the table; records.json in the run folder)",
        "",
        "<details><summary>Each row's overrides</summary>",
        "",
        *[f"- {r.method}: `{r.overrides}`" + (f" ({r.note})" if r.note else "") for r in rows],
        "",
        "</details>",
    ]
    return "\n".join(lines)


def write_doc(path: Path, rows: list[MethodRuns], teacher: dict[str, Any], out_dir: Path, command: str,
              setting: dict[str, Any]) -> Path:
    """Write the section of ``out_dir`` into ``path`` (see write_section)."""
    return write_section(path, section_name(out_dir), section_text(rows, teacher, command, setting), setting["data"])


def write_section(path: Path, name: str, body: str, data: str) -> Path:
    """Write ``body`` as the section ``name`` of ``path``: replaced between its markers, appended when the
    document has none yet, or a new document (a title and the section) when there is no document."""
    start, end = markers(name)
    section = f"{start}\n{body}\n{end}"
    if not path.is_file():
        text = (f"# Benchmark: distillation methods on {data}\n\nWhat the columns mean and how to read "
                f"them: docs/benchmarks.md of the repository.\n\n{section}\n")
    else:
        old = path.read_text()
        if start not in old:
            text = f"{old.rstrip()}\n\n{section}\n"
        elif end not in old.split(start, 1)[1]:
            raise SystemExit(f"error: {path} has the line {start} but no {end} after it; put the end marker back "
                             "where the section ends (the text between the two is rewritten)")
        else:
            head, rest = old.split(start, 1)
            text = head + section + rest.split(end, 1)[1]
    return atomic_write(path, lambda tmp: tmp.write_text(text))
