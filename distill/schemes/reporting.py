"""The efficiency report of a scheme's models (every teacher, link, generation or peer), written and logged."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from distill.config import to_dict
from distill.ranks import is_rank_zero
from distill.report import ReportEntry, build_report, log_report, write_report


def scheme_report(cfg: DictConfig, entries: list[ReportEntry], datamodule: Any, output_dir: Path,
                  loggers: list[Any] | None = None, title: str = "accuracy vs MACs") -> dict[str, Any] | None:
    """Measure ``entries`` side by side (see distill/report.py); None when the report is off or on a DDP worker."""
    if not cfg.report.enabled or not is_rank_zero():
        return None
    report = build_report(entries, datamodule, to_dict(cfg.report))
    paths = write_report(report, output_dir, title=title)
    log_report(loggers or [], report, paths["plot"])
    return {"files": {k: str(v) for k, v in paths.items()},
            "comparisons": [c["summary"] for c in report["comparisons"]]}


def loss_method(cfg: DictConfig) -> str:
    """What the loss adds to cross-entropy (``kd``, ``fitnet+kd``), as distill-summarize names methods."""
    return "+".join(name for name, term in to_dict(cfg.loss).items() if name != "ce" and term is not None) or "ce"
