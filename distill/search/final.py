"""The search's answer, checked the way a user would: the best student within budget distilled with the run's full
schedule (and compressed as ``compress`` asks), beside the default student distilled and alone, over seeds."""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Any

from omegaconf import DictConfig
from scipy import stats

from distill.io import read_json
from distill.search.space import Candidate, apply


def interval(differences: list[float]) -> tuple[float, float, float] | None:
    """Mean and 95 % t-interval of a sample (here: seed-paired differences); None with fewer than two values."""
    if len(differences) < 2:
        return None
    mean = statistics.fmean(differences)
    half = float(stats.t.ppf(0.975, len(differences) - 1)) * statistics.stdev(differences) / math.sqrt(len(differences))
    return mean, mean - half, mean + half


def final_runs(cfg: DictConfig, best: Candidate, training: dict[str, Any], default: Candidate,
               output_dir: Path) -> dict[str, Any]:
    """Run (or, from an earlier call, read) every final run; their test top-1 by role and seed, and the searched
    student's gain over the default student distilled, with its interval."""
    from distill.runner import run

    roles = {"searched": (best, training, "distill"), "default_distilled": (default, {}, "distill"),
             "default_alone": (default, {}, "student")}
    results: dict[str, dict[int, dict[str, Any]]] = {role: {} for role in roles}
    for seed in cfg.search.final.seeds:
        for role, (candidate, values, stage) in roles.items():
            folder = output_dir / "final" / f"{role}_seed{seed}"
            run(apply(cfg, candidate, values, **{"paths.output_dir": str(folder), "seed": int(seed), "stage": stage,
                                                 "resume": "auto", "ckpt_path": None}))
            summary = read_json(folder / "metrics.json")
            results[role][int(seed)] = {"folder": str(folder), "candidate": candidate.label,
                                        "test_acc_top1": summary["student"]["test_acc_top1"],
                                        "params": summary["student"]["params"],
                                        "compress": summary.get("compress")}
    seeds = sorted(results["searched"])
    gain = interval([results["searched"][s]["test_acc_top1"] - results["default_distilled"][s]["test_acc_top1"]
                     for s in seeds])
    by_role = {role: {"runs": runs, "mean": statistics.fmean(r["test_acc_top1"] for r in runs.values()),
                      "std": statistics.stdev([r["test_acc_top1"] for r in runs.values()]) if len(runs) > 1 else None}
               for role, runs in results.items()}
    return {"seeds": seeds, "roles": by_role,
            "gain_over_default_distilled": None if gain is None else dict(zip(("mean", "low", "high"), gain)),
            "beats_default_beyond_interval": gain is not None and gain[1] > 0}
