"""Which code runs a config's scheme: one model per run, or a chain of runs (chain, born-again)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from omegaconf import DictConfig

from distill.config.schemes import scheme_name
from distill.schemes.chain import SingleRun, run_chain
from distill.schemes.reporting import loss_method


def run_one(cfg: DictConfig, overrides: Sequence[str], run_single: SingleRun) -> dict[str, Any]:
    """A run of one model (mutual learning's peers count as one); an ensemble is named in the summary."""
    summary = run_single(cfg, overrides)
    if cfg.get("teachers") is not None and cfg.stage == "distill":
        members = [m["architecture"] for m in summary["teacher"]["members"]]
        summary["scheme"] = {"name": "ensemble", "members": members,
                             "method": f"ensemble({cfg.ensemble.aggregate}) {loss_method(cfg)}"}
    return summary


SCHEMES: dict[str, Callable[[DictConfig, Sequence[str], SingleRun], dict[str, Any]]] = {
    "single": run_one, "mutual": run_one, "chain": run_chain, "born_again": run_chain}


def run_scheme(cfg: DictConfig, overrides: Sequence[str], run_single: SingleRun) -> dict[str, Any]:
    """The summary of ``cfg``'s scheme; ``run_single`` (distill.train) trains one model of it."""
    return SCHEMES[scheme_name(cfg)](cfg, overrides, run_single)
