"""One row of scripts/benchmark.py under several settings, side by side: which one validation picks, and its gain.

    python scripts/compare_benchmarks.py --row kd outputs/benchmark_e60 outputs/benchmark_e60_kd_T2 \
        outputs/benchmark_e60_kd_w05 --out outputs/kd_variants_e60.json

Each folder is a benchmark out-dir whose ``setting.json`` records its Hydra overrides (a KD temperature, a
weight); the first folder's overrides are the common ones, so each line is labelled by what it adds. The
student alone comes from the first folder. The choice among the settings is made on the validation split
(the mean over seeds of each run's best validation top-1), never on the test split; the test columns then
say what the chosen setting is worth.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from distill.benchmark_doc import MethodRuns, interval_text, plus_minus  # noqa: E402
from distill.benchmark_stats import mean_std, welch_interval  # noqa: E402
from distill.io import read_json, write_json  # noqa: E402

BASELINE_FOLDER = "student_alone"


def seed_runs(folder: Path) -> dict[str, list[float]]:
    """Per seed (in %): the best validation top-1, and test top-1 at that epoch and at the last one (read as the
    benchmark's table reads them, MethodRuns.from_summaries)."""
    runs = MethodRuns.from_summaries(folder.name, "", [read_json(p) for p in sorted(folder.glob("*/metrics.json"))],
                                     record={})
    return {"val_best": runs.val_best, "test_best": runs.best, "test_last": runs.last}


def compare(row: str, out_dirs: list[Path]) -> dict:
    """The comparison as data: one entry per out-dir, the baseline's runs, and the setting validation picks."""
    overrides = [read_json(d / "setting.json").get("extra", []) for d in out_dirs]
    baseline = seed_runs(out_dirs[0] / BASELINE_FOLDER)
    if len(baseline["test_best"]) < 2:
        sys.exit(f"error: {out_dirs[0] / BASELINE_FOLDER} has fewer than 2 finished seeds of the student alone; "
                 "train it first (python scripts/benchmark.py --methods 'student alone' with that --out-dir)")
    entries = []
    for folder, extra in zip(out_dirs, overrides, strict=True):
        runs = seed_runs(folder / row)
        if not runs["test_best"]:
            sys.exit(f"error: {folder / row} has no finished run; run scripts/benchmark.py --methods {row} there")
        added = [o for o in extra if o not in overrides[0]]
        gain = welch_interval(runs["test_best"], baseline["test_best"])
        entries.append({"out_dir": str(folder), "setting": " ".join(added) or f"the {row} preset",
                        "seeds": len(runs["test_best"]), **runs,
                        "gain": None if gain is None else {"estimate": gain.estimate, "low": gain.low,
                                                           "high": gain.high},
                        "gain_text": "n/a (< 2 seeds)" if gain is None else interval_text(gain)})
    picked = max(entries, key=lambda e: mean_std(e["val_best"])[0])
    return {"row": row, "common_overrides": overrides[0], "baseline": baseline, "entries": entries,
            "picked_by_validation": picked["setting"]}


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
    parser.add_argument("out_dirs", nargs="+", type=Path, help="benchmark out-dirs; the first holds the baseline")
    parser.add_argument("--row", required=True, help="the row's folder name in each out-dir (kd, dkd, ...)")
    parser.add_argument("--out", type=Path, default=None, help="also write the comparison as JSON here")
    args = parser.parse_args()
    missing = [str(d) for d in args.out_dirs if not (d / "setting.json").is_file()]
    if missing:
        sys.exit(f"error: not benchmark out-dirs (no setting.json): {missing}; give folders scripts/benchmark.py "
                 "wrote with --out-dir")
    result = compare(args.row, args.out_dirs)
    print(table(result), end="")
    if args.out:
        write_json(args.out, result)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
