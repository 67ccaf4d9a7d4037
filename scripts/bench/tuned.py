"""Rows at a weight chosen on validation (issue #34). Where a method's reference weight overwhelms cross-entropy
on a setting's pair, its table shows two rows: the method at its reference weight, and at the weight of best
validation top-1. The test set is never read for the choice.

    python -m scripts.bench methods --setting strong --tune mlkd --results ...   # candidates, choice, the row

The candidates are the reference weight of the method's own term times FRACTIONS, one seed (0) each, in
``<out-dir>/tune_<method>/``; the reference weight itself is the method's row, seed 0. ``choice.json`` there
keeps every candidate's best-epoch validation top-1 and the weight chosen. The row "<method>, weight chosen on
validation" then trains that weight on every seed, as any other row (resumable, kept with --results).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from distill.io import read_json, write_json
from scripts.bench.grid import Method, folder_name
from scripts.bench.training import commit, common_overrides, record, train

FRACTIONS = (1 / 3, 1 / 10, 1 / 30, 1 / 100)  # of the reference weight: a term 3 to 300x larger than CE is seen
SUFFIX = ", weight chosen on validation"
CHOICE = "choice.json"


def tuned_name(method: str) -> str:
    return f"{method}{SUFFIX}"


def tune_folder(out_dir: Path, method: str) -> Path:
    return out_dir / f"tune_{folder_name(method)}"


def method_term(method: Method) -> tuple[str, float]:
    """The term whose weight is chosen (the preset's term named as the method) and its reference weight."""
    options = (method.preset or {}).get(method.name)
    if not isinstance(options, dict):
        raise ValueError(f"{method.name!r} has no loss term of its own name to tune (its preset's terms: "
                         f"{sorted(method.preset or {})}); --tune takes a loss row such as mlkd or fitnet")
    return method.name, float(options.get("weight", 1.0))


def candidate_weights(reference: float) -> list[float]:
    """The weights tried besides the reference, to 3 significant digits (they name the runs' configs)."""
    return [float(f"{reference * fraction:.3g}") for fraction in FRACTIONS]


def best_val_top1(run: Path) -> float | None:
    path = run / "metrics.json"
    return read_json(path)["student"].get("best_val_acc_top1") if path.is_file() else None


def candidate_runs(out_dir: Path, method: Method) -> dict[float, Path]:
    """Each weight's run: the reference weight's is the row's seed 0, the others' the tune folder's (a run's
    weight read from its run_config.json, not from its folder's number)."""
    term, reference = method_term(method)
    runs = {reference: out_dir / folder_name(method.name) / "0"}
    for run in sorted(tune_folder(out_dir, method.name).glob("[0-9]*")):
        if (run / "run_config.json").is_file():
            runs[float(read_json(run / "run_config.json")["loss"][term]["weight"])] = run
    return runs


def missing_candidates(out_dir: Path, method: Method) -> list[float]:
    """The candidate weights (the reference's excepted: it is the row's seed 0) with no finished run yet."""
    runs = candidate_runs(out_dir, method)
    return [w for w in candidate_weights(method_term(method)[1]) if w not in runs or best_val_top1(runs[w]) is None]


def choices(methods: list[Method], out_dir: Path) -> list[dict[str, Any]]:
    """The choice.json of every method that has one in the out-dir."""
    paths = [tune_folder(out_dir, method.name) / CHOICE for method in methods]
    return [read_json(path) for path in paths if path.is_file()]


def choose(out_dir: Path, method: Method) -> dict[str, Any]:
    """The weight of best validation top-1 among the reference and the candidates; refused while one has not
    finished (a choice among some of them would be another experiment)."""
    term, reference = method_term(method)
    runs = candidate_runs(out_dir, method)
    scores = {weight: best_val_top1(runs[weight]) if weight in runs else None
              for weight in [reference, *candidate_weights(reference)]}
    unfinished = [weight for weight, score in scores.items() if score is None]
    if unfinished:
        raise ValueError(f"{method.name}: no finished run at weight(s) {unfinished} (in "
                         f"{tune_folder(out_dir, method.name)} and {out_dir / folder_name(method.name)}/0); run the "
                         "same --tune command again")
    chosen = max(scores, key=lambda weight: scores[weight] or 0.0)
    return {"method": method.name, "term": term, "reference": reference, "chosen": chosen,
            "metric": "student.best_val_acc_top1 of seed 0 (validation split; the test set is not read)",
            "candidates": [{"weight": weight, "best_val_acc_top1": score, "run": str(runs[weight].relative_to(out_dir))}
                           for weight, score in scores.items()]}


def tuned_row(method: Method, choice: dict[str, Any]) -> Method | None:
    """The row at the chosen weight; None where validation chose the reference weight (the method's own row)."""
    if choice["chosen"] == choice["reference"]:
        return None
    term = choice["term"]
    return replace(method, name=tuned_name(method.name),
                   overrides=[*method.overrides, f"loss.{term}.weight={choice['chosen']}"],
                   note=f"{term} {choice['chosen']} chosen on validation from {choice['reference']} (reference) and "
                        + ", ".join(str(c["weight"]) for c in choice["candidates"][1:]))


def tuned_rows(methods: list[Method], out_dir: Path) -> list[Method]:
    """The rows of every method whose choice.json is in the out-dir (none where the reference was chosen)."""
    by_name = {method.name: method for method in methods}
    rows = [tuned_row(by_name[choice["method"]], choice) for choice in choices(methods, out_dir)
            if choice.get("method") in by_name]
    return [row for row in rows if row is not None]


def run_candidates(method: Method, args: argparse.Namespace) -> bool:
    """Train the candidates that have not finished (one multirun over the weights, seed 0); False if none."""
    term, reference = method_term(method)
    weights = candidate_weights(reference)
    folder = tune_folder(args.out_dir, method.name)
    if not missing_candidates(args.out_dir, method):
        return False
    # The whole sweep every time: Hydra numbers its jobs by their place in it, so a resumed job finds its folder.
    command = [sys.executable, "-m", "distill.train", "-m", "seed=0", f"hydra.sweep.dir={folder}",
               *common_overrides(args), *method.overrides, f"loss.{term}.weight={','.join(map(str, weights))}"]
    print(f"tuning: {method.name} ({term} at {', '.join(map(str, weights))}; seed 0)", flush=True)
    code = commit()
    returncode, seconds = train(command, args.out_dir / f"{folder.name}.log")
    print(f"{'tune ' + method.name:<36} {'ok' if returncode == 0 else 'FAILED'} in {seconds / 60:6.1f} min", flush=True)
    record(args.out_dir, f"tune {method.name}", command, seconds, returncode, code)
    return True


def write_choice(out_dir: Path, method: Method) -> dict[str, Any]:
    choice = choose(out_dir, method)
    write_json(tune_folder(out_dir, method.name) / CHOICE, choice)
    return choice


def section_text(choices: list[dict[str, Any]]) -> list[str]:
    """The doc's lines for the weights chosen on validation: each candidate's validation top-1."""
    if not choices:
        return []
    lines = ["### Weights chosen on validation", "",
             "A row whose reference weight overwhelms cross-entropy on this pair has a second row at the weight of "
             "best validation top-1 (seed 0, best epoch; the test set is not read for the choice):", "",
             "| method | weight tried: validation top-1 (%) | chosen |", "|---|---|---|"]
    for choice in choices:
        tried = "; ".join(f"{c['weight']}{' (reference)' if c['weight'] == choice['reference'] else ''}: "
                          f"{100 * c['best_val_acc_top1']:.2f}" for c in choice["candidates"])
        lines.append(f"| {choice['method']} | {choice['term']} {tried} | {choice['term']} {choice['chosen']} |")
    return [*lines, ""]
