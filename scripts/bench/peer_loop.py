"""Same numbers as a trusted peer (issue 34): KD and FitNet through torchdistill's own training loop beside ours.

    python -m scripts.bench peer-loop --plan        # what is done, what would run, the estimated time; trains nothing
    nice -n 10 python -m scripts.bench peer-loop    # torchdistill's seeds (resumable), the timing, table, JSON, figure
    python -m scripts.bench peer-loop --results docs/results/peer_loop   # keep the result jsons (to commit)
    python -m scripts.bench methods --setting strong --mini --methods kd fitnet --out-dir /tmp/b
    python -m scripts.bench peer-loop --mini --ours /tmp/b --out-dir /tmp/p   # 1 seed, 1 epoch of 3 batches: a check

Ours are not trained here: they are the strong grid's rows (``methods --setting strong``), read from --ours.
torchdistill's side is built from our seed-0 run_config.json (pair, data split, augmentation, optimiser, schedule,
epochs) as its examples/torchvision/image_classification.py runs: a ``train:`` config (a dict) given to
get_distillation_box; per epoch pre_epoch_process, forward_process + post_forward_process per batch, validation,
post_epoch_process (which steps the scheduler). The timing phase runs both for --timing-epochs, back to back in
this call: ours as a distill-train subprocess (its epochs timed by EpochClock), then torchdistill's in this process.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

import lightning as L
import torch

from distill.io import atomic_write, read_json, write_json
from distill.measure import clock
from distill.search.final import interval as mean_interval
from scripts.bench.doc import MethodRuns, document_for, learning_curve, write_section
from scripts.bench.grid import ROOT, STRONG, STRONG_COST, default_out_dir
from scripts.bench.results import copy_missing
from scripts.bench.stats import mean_std, median_after_first, welch_interval
from scripts.bench.torchdistill_loop import MINI, Recipe, read_recipe, run_torchdistill

METHODS = ("kd", "fitnet")
RESULT = "result.json"
DEFAULT_OUT_DIR = ROOT / "outputs" / "peer_loop"
KEPT = ("torchdistill/*/*/result.json", "peer_loop.json", "peer_loop.png")  # what --results keeps
# What our timing run must not take from the command that trained the row: its seeds, folders and length.
TIMING_DROPPED = ("seed", "hydra.sweep.dir", "hydra.run.dir", "resume", "trainer.max_epochs")


def ours_seeds(ours: Path, method: str, seeds: int) -> list[Path]:
    return [ours / method / str(s) for s in range(seeds) if (ours / method / str(s) / "metrics.json").is_file()]


def teacher_json(ours: Path) -> Path:
    """The teacher our runs distilled from: its cache entry (a results folder keeps it in teacher/cache/), or export."""
    metrics = read_json(ours / "teacher" / "metrics.json")
    info = metrics.get("teacher") or {}
    candidates = [Path(info.get("cache_entry") or "/nonexistent") / "teacher.json",
                  ours / "teacher" / "cache" / str(info.get("cache_key")) / "teacher.json",
                  Path(metrics.get("exported") or "/nonexistent"), ours / "teacher" / "teacher.json"]
    found = next((path for path in candidates if path.is_file()), None)
    if found is None:
        raise SystemExit(f"error: the teacher's weights are gone (looked for {', '.join(map(str, candidates))}); "
                         "restore them with the methods command's --results")
    return found


# ------------------------------------------------------------------ the timing


class EpochClock(L.Callback):
    """Seconds of each training epoch's batches, and to the epoch's end (validation included), written to ``path``
    after every epoch: how the timing phase reads a distill-train run from outside (a ``+callbacks`` override)."""

    def __init__(self, path: str) -> None:
        self.path, self.start = Path(path), 0.0
        self.times: dict[str, list[float]] = {"train_s": [], "epoch_s": []}

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.start = clock(pl_module.device)

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self.times["train_s"].append(clock(pl_module.device) - self.start)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.times["epoch_s"].append(clock(pl_module.device) - self.start)
        write_json(self.path, self.times)


def timing_command(trained_by: str, teacher_file: Path, epochs: int, run_dir: Path, times: Path,
                   t_max: int | None) -> list[str]:
    """The command that trained our row (records.json), cut to ``epochs`` epochs of seed 0 in ``run_dir``, with the
    teacher read from its file (never trained again) and live, as torchdistill's is."""
    words = shlex.split(trained_by)
    overrides = [w for w in words[words.index("distill.train") + 1:]
                 if w != "-m" and w.split("=", 1)[0].lstrip("+~") not in TIMING_DROPPED]
    return [sys.executable, "-m", "distill.train", *overrides, "seed=0", f"trainer.max_epochs={epochs}",
            *([f"scheduler.T_max={t_max}"] if t_max else []), f"teacher.weights={teacher_file}",
            "teacher_cache.enabled=false", "report.enabled=false", "test_last=false", "trainer.limit_test_batches=1",
            f"hydra.run.dir={run_dir}",
            f"+callbacks.peer_loop_clock={{_target_:scripts.bench.peer_loop.EpochClock,path:'{times}'}}"]


def time_both(recipe: Recipe, trained_by: str, teacher_file: Path, epochs: int, device: torch.device,
              log: Path) -> dict[str, Any]:
    """Seconds per epoch of ours, then of torchdistill's, on this machine in this call: medians after the first."""
    with tempfile.TemporaryDirectory(prefix="peer_loop_") as folder:
        times = Path(folder) / "times.json"
        command = timing_command(trained_by, teacher_file, epochs, Path(folder) / "run", times,
                                 (recipe.scheduler or {}).get("kwargs", {}).get("T_max"))
        with log.open("w") as handle:
            code = subprocess.run(command, cwd=ROOT, stdout=handle, stderr=subprocess.STDOUT).returncode
        if code != 0 or not times.is_file():
            raise SystemExit(f"error: our timing run failed (exit {code}); see {log}")
        ours = read_json(times)
    theirs = run_torchdistill(recipe, teacher_file, 0, device, epochs=epochs, test=False)
    sides = {"ours": ours, "torchdistill": {key: theirs[key] for key in ("train_s", "epoch_s")}}
    for side in sides.values():
        side.update({f"{key}_median": median_after_first(side[key]) for key in ("train_s", "epoch_s")})
    return {"epochs": epochs, "command": shlex.join(["python", *command[1:]]), **sides,
            "torchdistill_over_ours": sides["torchdistill"]["train_s_median"] / sides["ours"]["train_s_median"]}


# ------------------------------------------------------------------ the comparison


def compare(method: str, ours_dirs: list[Path], results: list[dict[str, Any]]) -> dict[str, Any]:
    """Both frameworks' test top-1 (%, best-validation and last epoch; mean and 95 % t interval), wall seconds per
    run, validation curves, and the Welch interval of the difference of the best-validation means."""
    ours = MethodRuns.from_summaries(method, "", [read_json(d / "metrics.json") for d in ours_dirs], {})
    by_epoch = [[100 * v for v in values] for values in zip(*(r["val_acc_top1"] for r in results))]
    ours_side = {"best": ours.best, "last": ours.last, "seconds": ours.seconds,
                 "curve": [[epoch + 1, mean, std] for epoch, mean, std in learning_curve(ours_dirs)]}
    theirs = {"best": [100 * r["test_acc_top1_best"] for r in results], "seconds": [r["seconds"] for r in results],
              "last": [100 * r["test_acc_top1_last"] for r in results],
              "curve": [[epoch + 1, *mean_std(values)] for epoch, values in enumerate(by_epoch)]}
    sides: dict[str, dict[str, Any]] = {"ours": ours_side, "torchdistill": theirs}
    for side in sides.values():
        spread = mean_interval(side["best"])  # (mean, low, high); None below 2 seeds
        side.update(seeds=len(side["best"]), best_mean=mean_std(side["best"])[0],
                    best_half_width=spread[2] - spread[0] if spread else None, last_mean=mean_std(side["last"])[0],
                    seconds_median=statistics.median(side["seconds"]) if side["seconds"] else None)
    difference = welch_interval(sides["torchdistill"]["best"], sides["ours"]["best"])
    return {**sides, "difference": asdict(difference) if difference else None,
            "agree": None if difference is None else not difference.excludes_zero,
            "teacher_test_acc_top1": [r.get("teacher_test_acc_top1") for r in results]}  # the weights loaded right


def plot(summary: dict[str, Any], path: Path) -> Path:
    """Mean validation top-1 per epoch of both frameworks, a band of ± one standard deviation over seeds."""
    from matplotlib.figure import Figure

    methods = summary["methods"]
    figure = Figure(figsize=(5 * len(methods), 4), layout="constrained")
    for axis, (method, row) in zip(figure.subplots(1, len(methods), squeeze=False)[0], methods.items()):
        for side, colour in (("ours", "tab:blue"), ("torchdistill", "tab:orange")):
            if row[side]["curve"]:
                epochs, means, stds = (list(column) for column in zip(*row[side]["curve"]))
                axis.plot(epochs, means, ".-", color=colour, label=f"{side}, seeds: {row[side]['seeds']}")
                axis.fill_between(epochs, [m - s for m, s in zip(means, stds)], [m + s for m, s in zip(means, stds)],
                                  color=colour, alpha=0.2)
        axis.set(title=method, xlabel="epoch", ylabel="validation top-1 (%)")
        axis.legend()
    return atomic_write(path, lambda tmp: figure.savefig(tmp, format="png", dpi=120))


SECTION = "peer-loop"  # its markers in the document


def markdown_table(summary: dict[str, Any]) -> list[str]:
    """One line per method and framework: test top-1 at the best validation epoch (mean ± 95 % t half-width),
    the last epoch's mean, seconds per run, and the timed seconds per training epoch; then the difference."""
    def number(value: float | None, digits: int = 2) -> str:
        return "n/a" if value is None else f"{value:.{digits}f}"

    lines = ["| method | loop | seeds | top-1 best val epoch (%) | top-1 last epoch (%) | s/run | s/epoch timed |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for method, row in summary["methods"].items():
        for side in ("ours", "torchdistill"):
            run, timing = row[side], (row.get("timing") or {}).get(side, {})
            lines.append(f"| {method} | {side} | {run['seeds']} | {number(run['best_mean'])} ± "
                         f"{number(run['best_half_width'])} | {number(run['last_mean'])} | "
                         f"{number(run['seconds_median'], 0)} | {number(timing.get('train_s_median'))} |")
    lines.append("")
    for method, row in summary["methods"].items():
        diff = row["difference"]
        lines.append(f"- **{method}**: torchdistill − ours " + ("n/a (fewer than 2 seeds a side)" if diff is None else
                     f"{diff['estimate']:+.2f} [{diff['low']:+.2f}, {diff['high']:+.2f}] (95 % Welch): "
                     + ("**the two agree** (the interval holds 0)" if row["agree"] else
                        "**they differ** (the interval excludes 0)")))
    return lines


def section_text(summary: dict[str, Any], figure: Path, doc_dir: Path) -> str:
    """The peer comparison's part of the document: the table, the figure, how it was made."""
    link = os.path.relpath(figure.resolve(), doc_dir.resolve())  # a link from the document to the figure
    return "\n".join([
        "### The same runs through torchdistill's loop",
        "",
        "Test top-1 of each loop's runs (mean ± the 95 % t half-width over seeds); *s/run* is the median wall time "
        "of a whole run as each side recorded it (ours from the grid, with start-up, export and report); *s/epoch "
        "timed* is the median training epoch of both loops timed back to back in one call of the command, with a "
        "live teacher on both sides.",
        "",
        *markdown_table(summary),
        "",
        f"![Validation top-1 per epoch, both loops]({link})",
        "",
        f"- command: `{summary['command']}`; device: {summary['device']}",
        f"- our runs: `{in_repository(summary['ours'])}`; teacher: test top-1 "
        f"{percent(summary['teacher_test_acc_top1'])} in our metrics.json, measured again by the torchdistill side: "
        + ", ".join(sorted({percent(v) for row in summary["methods"].values() for v in row["teacher_test_acc_top1"]
                            if v is not None})),
    ])


# ------------------------------------------------------------------ the command


def finished(path: Path, recipe: Recipe) -> dict[str, Any] | None:
    """The kept result of a seed, None if it has not run; a result of another recipe stops the command."""
    if not path.is_file():
        return None
    result = read_json(path)
    if result["recipe"] != json.loads(json.dumps(asdict(recipe))):
        raise SystemExit(f"error: {path} holds a run of another recipe (--mini, or our runs changed); give another "
                         "--out-dir and --results")
    return result


def in_repository(path: str) -> str:
    """``path`` relative to the repository when it lies inside it (the doc names no machine's folders)."""
    resolved = Path(path).resolve()
    return str(resolved.relative_to(ROOT)) if resolved.is_relative_to(ROOT) else path


def percent(fraction: float | None) -> str:
    return "n/a" if fraction is None else f"{100 * fraction:.2f} %"


def plan(args: argparse.Namespace, recipes: dict[str, Recipe | None]) -> float:
    """Print what is done and what would run; return the estimated seconds (grid.STRONG_COST: 2 CPU cores). Without
    our runs (whose run_config.json is the recipe) the strong setting's schedule stands in."""
    cost, total = STRONG_COST, 0.0
    for method, recipe in recipes.items():
        found = len(ours_seeds(args.ours, method, args.seeds))
        epochs, batches = (recipe.epochs, recipe.batches) if recipe else (STRONG.epochs, STRONG.batches)
        epoch = (batches or 430) * (cost["student_step"] + cost["teacher_forward"]) + cost["validation"]
        done = sum(bool(recipe and finished(args.out_dir / "torchdistill" / method / str(s) / RESULT, recipe))
                   for s in range(args.seeds))
        seconds = (args.seeds - done) * (cost["run"] + epochs * epoch)
        seconds += (2 * cost["run"] + 2 * args.timing_epochs * epoch) if args.timing_epochs else 0
        total += seconds
        print(f"{method}: ours {found}/{args.seeds} seeds" + ("" if recipe else f" in {args.ours}: train them first "
              f"({args.methods_command})") + f"; torchdistill {done}/{args.seeds} done, {epochs} epochs of "
              f"{batches or 'all'} batches; timing {args.timing_epochs} epochs a side; about {seconds / 60:.0f} min")
    print(f"estimated time: {total / 60:.0f} min on 2 CPU cores with nothing else running (± 50 %)")
    return total


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plan", action="store_true", help="print what would run and the estimate; train nothing")
    parser.add_argument("--mini", action="store_true", help="1 seed, 1 epoch of 3 batches, 256 val/test images")
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--ours", type=Path, default=default_out_dir(STRONG),
                        help="our finished runs: the strong grid's out-dir, or its --results folder")
    parser.add_argument("--out-dir", type=Path, default=DEFAULT_OUT_DIR)
    parser.add_argument("--results", type=Path, default=None, help="keep the result jsons here (to commit)")
    parser.add_argument("--timing-epochs", type=int, default=2, help="timed epochs of each side; 0: no timing")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--doc", type=Path, default=None,
                        help="the document whose peer-loop section is written (default: docs/benchmarks.md for "
                        "the default --out-dir, else <out-dir>/benchmarks.md)")
    args = parser.parse_args(argv)
    args.seeds = MINI["seeds"] if args.mini else args.seeds
    if args.doc is None:  # the published section only from the default folder, as the methods command does
        args.doc = document_for(args.out_dir, DEFAULT_OUT_DIR, args.mini, ROOT / "docs" / "benchmarks.md")
    args.methods_command = f"python -m scripts.bench methods --setting strong --methods {' '.join(args.methods)}"
    args.command = shlex.join(["python", "-m", "scripts.bench", "peer-loop", *(sys.argv[1:] if argv is None else argv)])
    return args


def main(argv: list[str] | None = None) -> dict[str, Any] | None:
    args = parse_args(argv)
    if args.results:  # before anything reads the out-dir: a new machine gets the kept seeds back
        copy_missing(args.results, args.out_dir, KEPT)
    recipes = {m: read_recipe(m, read_json(dirs[0] / "run_config.json"), args.mini)
               if (dirs := ours_seeds(args.ours, m, args.seeds)) else None for m in args.methods}
    if args.plan:
        plan(args, recipes)
        return None
    missing = [m for m in args.methods if len(ours_seeds(args.ours, m, args.seeds)) < args.seeds]
    if missing:
        raise SystemExit(f"error: our runs of {missing} are missing in {args.ours} ({args.seeds} seeds with "
                         f"metrics.json each); train them first: {args.methods_command} (or give --ours <folder>)")
    device, teacher_file = torch.device(args.device), teacher_json(args.ours)
    json_path = args.out_dir / "peer_loop.json"
    summary: dict[str, Any] = {"command": args.command, "ours": str(args.ours), "teacher": str(teacher_file),
                               "device": str(device), "methods": {}, "teacher_test_acc_top1": (read_json(
                                   args.ours / "teacher" / "metrics.json").get("teacher") or {}).get("test_acc_top1")}
    for method in args.methods:
        recipe = recipes[method]
        assert recipe is not None  # every method has our runs (checked above)
        results = []
        for seed in range(args.seeds):
            path = args.out_dir / "torchdistill" / method / str(seed) / RESULT
            result = finished(path, recipe)
            if result is None:
                print(f"torchdistill {method} seed {seed}: {recipe.epochs} epochs", flush=True)
                result = run_torchdistill(recipe, teacher_file, seed, device)
                write_json(path, result)
                print(f"  test top-1 {result['test_acc_top1_best']:.4f}, {result['seconds'] / 60:.1f} min", flush=True)
                if args.results:  # each seed as it finishes: a crash later loses none of it
                    copy_missing(args.out_dir, args.results, KEPT[:1])
            results.append(result)
        row = compare(method, ours_seeds(args.ours, method, args.seeds), results)
        if args.timing_epochs:
            trained_by = (read_json(args.ours / "records.json").get(method) or {}).get("command")
            if not trained_by:
                raise SystemExit(f"error: {args.ours}/records.json has no command for {method}: run "
                                 f"{args.methods_command} (it records the command), or give --timing-epochs 0")
            print(f"timing {method}: {args.timing_epochs} epochs of ours, then of torchdistill's", flush=True)
            row["timing"] = time_both(recipe, trained_by, teacher_file, args.timing_epochs, device,
                                      args.out_dir / f"timing_{method}.log")
        elif json_path.is_file():  # a rerun without timing keeps the last one's
            row["timing"] = (read_json(json_path)["methods"].get(method) or {}).get("timing")
        summary["methods"][method] = row
    print("\n".join(markdown_table(summary)))
    measured = sorted({v for row in summary["methods"].values() for v in row["teacher_test_acc_top1"] if v is not None})
    print(f"teacher test top-1: {summary['teacher_test_acc_top1']} in our metrics.json, {measured} here")
    write_json(json_path, summary)
    plot(summary, args.out_dir / "peer_loop.png")
    if args.results:
        args.results.mkdir(parents=True, exist_ok=True)
        for name in KEPT[1:]:
            shutil.copy2(args.out_dir / name, args.results / name)
    figure = (args.results or args.out_dir) / "peer_loop.png"
    write_section(args.doc, SECTION, section_text(summary, figure, args.doc.parent), "Fashion-MNIST")
    print(f"wrote {json_path}, {args.out_dir / 'peer_loop.png'} and {args.doc}")
    return summary


if __name__ == "__main__":
    main()
