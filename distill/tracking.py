"""Loggers: wandb goes offline by itself when it cannot reach the service; runs are closed between fits."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import Logger, WandbLogger

log = logging.getLogger(__name__)


def sweep_dashboard_fields(sweep_dir: str, loss_choice: str | None, overrides: list[str]) -> dict[str, object]:
    """wandb fields that group a sweep's runs: group = sweep folder name, job type = loss preset, tags = overrides."""
    return {"group": Path(sweep_dir).name, "job_type": loss_choice or "custom-loss",
            "tags": [override[:64] for override in overrides]}  # wandb limits a tag to 64 characters


def apply_to_wandb_loggers(logger_cfg: Mapping[str, Any] | None, fields: dict[str, object]) -> None:
    """Set ``fields`` on every WandbLogger entry of a logger config group (others are left alone)."""
    if not logger_cfg:
        return
    for entry in logger_cfg.values():
        if entry is not None and str(entry.get("_target_", "")).endswith("WandbLogger"):
            for key, value in fields.items():
                entry[key] = value


def close_loggers(loggers: list[Logger]) -> list[str]:
    """Finish wandb runs (so the next fit opens its own) and return ``wandb sync`` commands for offline ones."""
    sync_commands = []
    for logger in loggers:
        if not isinstance(logger, WandbLogger) or logger._experiment is None:
            continue
        import wandb

        run = logger.experiment
        run_dir = Path(run.dir).parent
        offline = bool(run.settings._offline) if hasattr(run.settings, "_offline") else run.settings.mode == "offline"
        run.finish()
        wandb.finish()
        if offline:
            command = f"wandb sync {run_dir}"
            log.debug("wandb run saved offline; upload it later with: %s", command)  # the summary says it
            sync_commands.append(command)
    return sync_commands
