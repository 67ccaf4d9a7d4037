"""How each benchmark row's student fits its training set: the last epoch's loss terms beside its test top-1.

    python -m scripts.bench fit outputs/benchmark_e60 student_alone pkt feature_distance dml_x2 fitnet rkd at \
        --out docs/results/fit_e60.json

A distillation term competes with cross-entropy for the student's capacity. When the student alone's training
accuracy is about its test accuracy (an underfitting student: no generalisation gap for a teacher to close), a
term that lowers the training accuracy can only lower the test accuracy with it; this table shows it row by row.

Per seed, the last training epoch of the run's csv/metrics.csv (for TAKD and born-again, their final link's):
each loss term times its weight in the run's run_config.json, the cross-entropy as logged (unweighted), and
the training top-1 (on augmented batches; DML: the mean of its peers). Ranges are min–max over the seeds. The
test column is the benchmark table's (top-1 at the best validation epoch), with the gain over the folder's
student alone and its 95 % Welch interval.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

from omegaconf import OmegaConf

from distill.io import read_json, write_json
from scripts.bench.compare import (
    BASELINE_FOLDER,
    baseline_runs,
    finished_rows,
    gain_entry,
    require_out_dirs,
    seed_runs,
)
from scripts.bench.doc import plus_minus

TERM_PREFIX = "train/"
LOSS_MARK = "loss/"


def final_csv(seed_dir: Path) -> Path | None:
    """The csv of the run that trained the seed's final student (a linked scheme's last link), or None."""
    own = seed_dir / "csv" / "metrics.csv"
    if own.is_file():
        return own
    links = sorted((seed_dir / "links").glob("*/csv/metrics.csv"), key=lambda p: int(p.parts[-3].split("-")[0]))
    return links[-1] if links else None


def last_train_epoch(path: Path) -> dict[str, float] | None:
    """The last csv row with the epoch's training means (Lightning writes them on a row of their own), or None."""
    with path.open() as handle:
        rows = [row for row in csv.DictReader(handle) if row.get(f"{TERM_PREFIX}acc_top1")]
    return {key: float(value) for key, value in rows[-1].items() if value} if rows else None


def train_top1(seed_dir: Path) -> float | None:
    """The seed's training top-1 (%) at its last epoch (on augmented batches), or None where its csv cannot say."""
    path = final_csv(seed_dir)
    values = last_train_epoch(path) if path is not None else None
    return 100 * values[f"{TERM_PREFIX}acc_top1"] if values is not None else None


def metrics_csv(seed_dir: Path) -> Path:
    path = final_csv(seed_dir)
    if path is None:
        sys.exit(f"error: {seed_dir} has no csv/metrics.csv (nor links/*/csv/metrics.csv); the table needs runs "
                 "trained with the csv logger, as the methods command trains them")
    return path


def last_epoch(path: Path) -> dict[str, float]:
    values = last_train_epoch(path)
    if values is None:
        sys.exit(f"error: {path} has no finished training epoch (no {TERM_PREFIX}acc_top1 value)")
    return values


def term_weights(config: dict) -> dict[str, float]:
    """Each logged term's weight in the total the run minimised, read from the run's config."""
    stage = config.get("stage")
    if stage == "student":  # the student alone trains on cross-entropy only, whatever the loss group says
        return {"ce": 1.0}
    if stage == "mutual":
        return {"ce": config["mutual"]["ce_weight"], "kl": config["mutual"]["kl_weight"]}
    return {name: float(spec["weight"]) for name, spec in config["loss"].items()}


def run_config(seed_dir: Path) -> dict:
    """The run's config: run_config.json, or Hydra's own copy for runs older than that file (unresolved: the
    values read here are plain numbers)."""
    if (seed_dir / "run_config.json").is_file():
        return read_json(seed_dir / "run_config.json")
    if (seed_dir / ".hydra" / "config.yaml").is_file():
        config = OmegaConf.to_container(OmegaConf.load(seed_dir / ".hydra" / "config.yaml"))
        assert isinstance(config, dict), "a run's Hydra config is a mapping"
        return config
    sys.exit(f"error: {seed_dir} has neither run_config.json nor .hydra/config.yaml; the loss weights are needed "
             "to weight the logged terms")


def seed_fit(seed_dir: Path) -> dict:
    """One seed's last epoch: weighted distillation terms, cross-entropy and training top-1 (%)."""
    weights = term_weights(run_config(seed_dir))
    values = last_epoch(metrics_csv(seed_dir))
    raw: dict[str, list[float]] = {}
    for key, value in values.items():
        if key.startswith(TERM_PREFIX) and LOSS_MARK in key:
            # train/loss/at, or per peer under mutual learning: train/peer0/loss/kl (averaged over the peers)
            raw.setdefault(key.split(LOSS_MARK, 1)[1], []).append(value)
    unknown = sorted(set(raw) - set(weights))
    if unknown:
        sys.exit(f"error: {seed_dir}: logged term(s) {unknown} have no weight in run_config.json "
                 f"(weights for {sorted(weights)})")
    means = {name: sum(v) / len(v) for name, v in raw.items()}
    return {"terms": {name: weights[name] * value for name, value in means.items() if name != "ce"},
            "ce": means.get("ce"), "train_top1": 100 * values[f"{TERM_PREFIX}acc_top1"]}


def row_fit(folder: Path, baseline_test: list[float]) -> dict:
    # The seeds in the order seed_runs reads their metrics.json, so per_seed and test_best line up.
    seeds = [path.parent for path in sorted(folder.glob("*/metrics.json"))]
    if not seeds:
        sys.exit(f"error: {folder} has no finished run; run python -m scripts.bench methods --methods {folder.name} "
                 "there")
    fits = [seed_fit(d) for d in seeds]
    test = seed_runs(folder)["test_best"]
    entry = {"row": folder.name, "seeds": [d.name for d in seeds], "per_seed": fits, "test_best": test}
    if folder.name != BASELINE_FOLDER:
        entry.update(gain_entry(test, baseline_test))
    return entry


def span(values: list[float], spec: str, suffix: str = "") -> str:
    """min–max over seeds in format ``spec``, one number when they print the same."""
    low, high = format(min(values), spec), format(max(values), spec)
    return f"{low}{suffix}" if low == high else f"{low}–{high}{suffix}"


def table(entries: list[dict]) -> str:
    lines = ["| row | distillation terms at the end (weighted) | CE at the end | training top-1 | "
             "test top-1 (best val epoch) |", "|---|---|---:|---:|---:|"]
    for entry in entries:
        fits = entry["per_seed"]
        names = sorted({name for fit in fits for name in fit["terms"]})
        terms = "; ".join(f"{name} {span([fit['terms'][name] for fit in fits if name in fit['terms']], '#.3g')}"
                          for name in names) or "—"
        ce = [fit["ce"] for fit in fits if fit["ce"] is not None]
        test = plus_minus(entry["test_best"]) + " %" + (f", {entry['gain_text']}" if "gain_text" in entry else "")
        lines.append(f"| {entry['row']} | {terms} | {span(ce, '.2f') if ce else '—'} | "
                     f"{span([fit['train_top1'] for fit in fits], '.1f', ' %')} | {test} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path, help="an out-dir of the methods command")
    parser.add_argument("rows", nargs="*", help="row folders (kd, at, dml_x2, ...); default: every finished row")
    parser.add_argument("--out", type=Path, default=None, help="also write the per-seed numbers as JSON here")
    args = parser.parse_args()
    require_out_dirs([args.out_dir])
    available = finished_rows(args.out_dir)
    missing = [row for row in args.rows if row not in available]
    if missing:
        sys.exit(f"error: no finished run in {args.out_dir} for {missing}; finished rows: {available}")
    baseline = baseline_runs(args.out_dir)["test_best"]
    rows = args.rows or [BASELINE_FOLDER, *(row for row in available if row != BASELINE_FOLDER)]
    entries = [row_fit(args.out_dir / row, baseline) for row in rows]
    print(table(entries), end="")
    if args.out:
        write_json(args.out, {"out_dir": str(args.out_dir), "rows": entries})
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
