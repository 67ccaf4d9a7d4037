"""One ``distill-search``: the trials, the front, the final runs, the report (``search.json``, ``search.md``)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from distill.io import atomic_write, write_json
from distill.reliability.run_folder import run_folder_lock
from distill.search.budget import describe_limits
from distill.search.front import front_table, mark_front, plot_front, write_csv
from distill.search.space import Candidate, default_candidate
from distill.search.study import run_trials, trial_rows

log = logging.getLogger("distill")


def logits_entries(cache_dir: str) -> set[str]:
    return {path.parent.name for path in (Path(cache_dir).expanduser() / "teacher_outputs").glob("*/meta.json")}


def search(cfg: DictConfig, output_dir: Path) -> dict[str, Any]:
    """Run the search in ``output_dir`` (held for the whole search); again in the same folder, it continues."""
    with run_folder_lock(output_dir):
        write_json(output_dir / "search_config.json", OmegaConf.to_container(cfg, resolve=True))
        entries_before = logits_entries(cfg.paths.cache_dir)
        study, budget = run_trials(cfg, output_dir)
        metric, limits = budget["metric"], budget["limits"]
        rows = mark_front(trial_rows(study, limits), metric)
        write_csv(rows, output_dir / "trials.csv")
        trained = [row for row in rows if row["val_acc_top1"] is not None and row["within_budget"]]
        result: dict[str, Any] = {
            "budget": budget, "sampler": cfg.search.sampler, "pruner": cfg.search.pruner,
            "trials": len(rows), "trial_epochs": cfg.search.trial_epochs,
            "stopped_by_budget": sum(row["state"] == "stopped by budget" for row in rows),
            "stopped_by_pruner": sum(row["state"] == "stopped by pruner" for row in rows),
            "repeats": sum(row["state"].startswith("repeat") for row in rows),
            "student_epochs": sum(int(row["epochs"] or 0) for row in rows) + budget["default_student"]["epochs"],
            "teacher_output_cache_entries_built": len(logits_entries(cfg.paths.cache_dir) - entries_before),
            "front": [row for row in rows if row.get("pareto")], "files": {"trials": str(output_dir / "trials.csv")}}
        marks = {f"{role} {budget[key]['candidate']}": (budget[key][metric], budget[key]["val_acc_top1"])
                 for role, key in (("default", "default_student"), ("teacher", "teacher"))
                 if budget[key]["val_acc_top1"] is not None}
        result["files"]["plot"] = str(plot_front(rows, metric, limits.get(metric), marks, output_dir / "front.png"))
        if not trained:
            log.warning("search: no trial within budget finished; nothing to retrain")
            result["best"] = None
        else:
            best = max(trained, key=lambda row: row["val_acc_top1"])
            result["best"] = best
            if cfg.search.final.enabled:
                from distill.search.final import final_runs

                result["final"] = final_runs(cfg, Candidate.of(best["architecture"], best["kwargs"]),
                                             best["training"], default_candidate(cfg), output_dir)
        write_json(output_dir / "search.json", result)
        atomic_write(output_dir / "search.md", lambda tmp: tmp.write_text(report_markdown(result, metric)))
        return result


def report_markdown(result: dict[str, Any], metric: str) -> str:
    budget, default = result["budget"], result["budget"]["default_student"]
    limits = describe_limits(budget["limits"])
    default_costs = ", ".join(f"{name} {default[name]:.4g}" for name in budget["limits"])
    lines = [f"# distill-search: {result['trials']} trials ({result['sampler']}, pruner {result['pruner']})", "",
             f"Budget: {limits} on {budget['runtime']} ({budget['threads']} thread(s)); the default student "
             f"{default['candidate']}: {default_costs}.", "",
             f"Stopped by the budget (never trained): {result['stopped_by_budget']}; stopped by the pruner: "
             f"{result['stopped_by_pruner']}; proposed again (answered from the trial's folder): {result['repeats']}; "
             f"student-epochs trained in trials: {result['student_epochs']}; "
             f"teacher-output cache entries built: {result['teacher_output_cache_entries_built']}.", "",
             "## Pareto front (validation top-1 against the budget metric, within budget)", "",
             front_table(result["front"], metric)]
    if result.get("best") is None:
        lines += ["", "No trial within budget finished, so nothing was retrained. Run more trials "
                      "(`search.trials`), a space with smaller candidates (`search.space`), or a looser budget "
                      "(`search.budget.limits`)."]
    final = result.get("final")
    if final:
        lines += ["", f"## Final runs (full schedule, seeds {final['seeds']}): test top-1", "",
                  "| role | student | mean (%) | std |", "|---|---|---|---|"]
        for role, data in final["roles"].items():
            std = "—" if data["std"] is None else f"{100 * data['std']:.2f}"
            candidate = next(iter(data["runs"].values()))["candidate"]
            lines.append(f"| {role.replace('_', ' ')} | {candidate} | {100 * data['mean']:.2f} | {std} |")
        gain = final["gain_over_default_distilled"]
        if gain:
            lines += ["", f"Searched − default distilled: {100 * gain['mean']:+.2f} points, 95 % interval "
                          f"[{100 * gain['low']:+.2f}, {100 * gain['high']:+.2f}] over paired seeds."]
    return "\n".join(lines) + "\n"
