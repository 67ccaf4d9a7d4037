"""Rows of the method table under several settings, side by side: one row's variants, or every row's gain.

    python -m scripts.bench compare --row kd outputs/benchmark_e60 outputs/benchmark_e60_kd_T2 \
        outputs/benchmark_e60_kd_w05 --out outputs/kd_variants_e60.json
    python -m scripts.bench compare --every-row outputs/benchmark outputs/benchmark_e60

Each folder is a benchmark out-dir whose ``setting.json`` records its schedule and Hydra overrides.

``--row``: one row under settings that differ by overrides (a KD temperature, a weight); the first folder's
overrides are the common ones, so each line is labelled by what it adds. The student alone comes from the
first folder. The choice among the settings is made on the validation split (the mean over seeds of each run's
best validation top-1), never on the test split; the test columns then say what the chosen setting is worth.

``--every-row``: every row finished in all the folders (a 15- and a 60-epoch grid, say), each folder's gains
against its own student alone, since a gain only means something against the baseline of the same schedule.
Nothing is picked: the question is whether a row's gain survives the change of setting.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from distill.io import read_json, write_json
from scripts.bench.doc import MethodRuns, interval_text, plus_minus
from scripts.bench.stats import mean_std, welch_interval

BASELINE_FOLDER = "student_alone"


def require_out_dirs(out_dirs: list[Path]) -> None:
    """Stop, naming them, if any of ``out_dirs`` is not a benchmark out-dir (it has no setting.json)."""
    missing = [str(d) for d in out_dirs if not (d / "setting.json").is_file()]
    if missing:
        sys.exit(f"error: not benchmark out-dirs (no setting.json): {missing}; give folders the methods "
                 "command (python -m scripts.bench methods) wrote with --out-dir")


def seed_runs(folder: Path) -> dict[str, list[float]]:
    """Per seed (in %): the best validation top-1, and test top-1 at that epoch and at the last one (read as the
    benchmark's table reads them, MethodRuns.from_summaries)."""
    runs = MethodRuns.from_summaries(folder.name, "", [read_json(p) for p in sorted(folder.glob("*/metrics.json"))],
                                     record={})
    return {"val_best": runs.val_best, "test_best": runs.best, "test_last": runs.last}


def baseline_runs(folder: Path) -> dict[str, list[float]]:
    """The student alone's runs in ``folder``; at least 2 seeds, or there is no interval to give."""
    baseline = seed_runs(folder / BASELINE_FOLDER)
    if len(baseline["test_best"]) < 2:
        sys.exit(f"error: {folder / BASELINE_FOLDER} has fewer than 2 finished seeds of the student alone; train "
                 "them first (python -m scripts.bench methods --methods 'student alone' with that --out-dir)")
    return baseline


def gain_entry(test_best: list[float], baseline_test_best: list[float]) -> dict:
    """The gain over the student alone as data and as table text ("n/a" below 2 seeds)."""
    gain = welch_interval(test_best, baseline_test_best)
    return {"gain": None if gain is None else {"estimate": gain.estimate, "low": gain.low, "high": gain.high},
            "gain_text": "n/a (< 2 seeds)" if gain is None else interval_text(gain)}


def compare(row: str, out_dirs: list[Path]) -> dict:
    """The comparison as data: one entry per out-dir, the baseline's runs, and the setting validation picks."""
    overrides = [read_json(d / "setting.json").get("extra", []) for d in out_dirs]
    baseline = baseline_runs(out_dirs[0])
    entries = []
    for folder, extra in zip(out_dirs, overrides, strict=True):
        runs = seed_runs(folder / row)
        if not runs["test_best"]:
            sys.exit(f"error: {folder / row} has no finished run; run python -m scripts.bench methods --methods {row} "
                     "there")
        added = [o for o in extra if o not in overrides[0]]
        entries.append({"out_dir": str(folder), "setting": " ".join(added) or f"the {row} preset",
                        "seeds": len(runs["test_best"]), **runs,
                        **gain_entry(runs["test_best"], baseline["test_best"])})
    picked = max(entries, key=validation_mean)
    return {"row": row, "common_overrides": overrides[0], "baseline": baseline, "entries": entries,
            "picked_by_validation": picked["setting"]}


def validation_mean(entry: dict) -> float:
    """The mean over seeds of an entry's best validation top-1: what picks the setting."""
    mean, _ = mean_std(entry["val_best"])
    assert mean is not None, f"{entry['out_dir']} has finished runs without a validation record"
    return mean


def setting_labels(out_dirs: list[Path]) -> list[str]:
    """Each folder named by what sets it apart from the others: its values of the setting keys that differ."""
    settings = [read_json(d / "setting.json") for d in out_dirs]
    keys = [k for k in settings[0] if any(s.get(k) != settings[0].get(k) for s in settings)]
    keys.sort(key=lambda k: k == "extra")  # the schedule first, the overrides after it
    labels = []
    for setting in settings:
        words = [" ".join(setting.get(k) or ["no overrides"]) if k == "extra" else f"{k} {setting.get(k)}"
                 for k in keys]
        labels.append(", ".join(words) or "same setting")
    return labels


def finished_rows(folder: Path) -> list[str]:
    return sorted(d.name for d in folder.iterdir() if d.is_dir() and any(d.glob("*/metrics.json")))


def compare_every_row(out_dirs: list[Path]) -> dict:
    """Per folder: its label, its student alone, and for every row finished in all folders its test top-1 (at
    the best validation epoch) and gain over that folder's own student alone."""
    settings: list[dict[str, Any]] = []
    for folder, label in zip(out_dirs, setting_labels(out_dirs), strict=True):
        settings.append({"out_dir": str(folder), "label": label, "baseline": baseline_runs(folder)})
    common = set.intersection(*(set(finished_rows(d)) for d in out_dirs)) - {BASELINE_FOLDER}
    rows: dict[str, list[dict]] = {}
    for row in sorted(common):
        rows[row] = []
        for folder, setting in zip(out_dirs, settings, strict=True):
            test_best = seed_runs(folder / row)["test_best"]
            rows[row].append({"seeds": len(test_best), "test_best": test_best,
                              **gain_entry(test_best, setting["baseline"]["test_best"])})
    return {"settings": settings, "rows": rows}


def every_row_table(result: dict) -> str:
    """Rows ordered by their gain in the last folder (the setting the comparison leads to)."""
    settings = result["settings"]
    header = "| row | " + " | ".join(f"{s['label']}: top-1 % (seeds) | gain (95 % CI)" for s in settings) + " |"
    lines = [header, "|---|" + "---:|---:|" * len(settings),
             "| student alone | " + " | ".join(f"{plus_minus(s['baseline']['test_best'])} "
                                         f"({len(s['baseline']['test_best'])}) | —" for s in settings)
             + " |"]

    def last_gain(item: tuple[str, list[dict]]) -> float:
        gain = item[1][-1]["gain"]
        return gain["estimate"] if gain else float("-inf")

    for row, entries in sorted(result["rows"].items(), key=last_gain, reverse=True):
        cells = [f"{plus_minus(e['test_best'])} ({e['seeds']}) | {e['gain_text']}" for e in entries]
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def table(result: dict) -> str:
    baseline = result["baseline"]
    lines = [f"| {result['row']} setting | seeds | best val top-1 (%) | test top-1 at best val epoch (%) | "
             "test top-1 last epoch (%) | gain over student alone (95 % CI) |",
             "|---|---:|---:|---:|---:|---:|",
             f"| student alone | {len(baseline['test_best'])} | {plus_minus(baseline['val_best'])} | "
             f"{plus_minus(baseline['test_best'])} | {plus_minus(baseline['test_last'])} | — |"]
    for entry in result["entries"]:
        mark = " (picked by validation)" if entry["setting"] == result["picked_by_validation"] else ""
        lines.append(f"| {entry['setting']}{mark} | {entry['seeds']} | {plus_minus(entry['val_best'])} | "
                     f"{plus_minus(entry['test_best'])} | {plus_minus(entry['test_last'])} | {entry['gain_text']} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dirs", nargs="+", type=Path,
                        help="benchmark out-dirs (with --row the first one holds the student alone)")
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--row", help="one row's folder name in each out-dir (kd, dkd, ...): its variants compared")
    mode.add_argument("--every-row", action="store_true", help="every row finished in all the out-dirs, each "
                      "folder's gains against its own student alone")
    parser.add_argument("--out", type=Path, default=None, help="also write the comparison as JSON here")
    args = parser.parse_args()
    require_out_dirs(args.out_dirs)
    if args.every_row:
        result = compare_every_row(args.out_dirs)
        print(every_row_table(result), end="")
    else:
        result = compare(args.row, args.out_dirs)
        print(table(result), end="")
    if args.out:
        write_json(args.out, result)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
