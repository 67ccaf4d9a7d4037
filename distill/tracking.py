"""Loggers: wandb goes offline by itself when it cannot reach the service; runs are closed between fits."""

from __future__ import annotations

import csv
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import CSVLogger, Logger, WandbLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter

from distill.io import atomic_write

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


class ResumedCSVWriter(ExperimentWriter):
    """Lightning's CSV writer deletes metrics.csv when it opens a folder that has one: on a resumed run, the
    rows of every epoch before the checkpoint, so the run's learning curve would start at the resumed epoch.
    This writer keeps the rows of the steps before the first step the resumed run logs; the rows the
    interrupted run logged after its checkpoint are dropped, since the resumed run logs those steps again."""

    def __init__(self, log_dir: str) -> None:
        self._earlier_rows_merged = False
        super().__init__(log_dir)

    def _check_log_dir_exists(self) -> None:
        pass  # the base class deletes metrics.csv here; its earlier rows are merged at the first log instead

    def log_metrics(self, metrics_dict: dict[str, float], step: int | None = None) -> None:
        if not self._earlier_rows_merged:
            self._earlier_rows_merged = True
            self._keep_rows_before(step if step is not None else len(self.metrics))
        super().log_metrics(metrics_dict, step)

    def _keep_rows_before(self, step: int) -> None:
        path = Path(self.metrics_file_path)
        if not path.is_file():
            return
        with path.open(newline="") as handle:
            reader = csv.DictReader(handle)
            header, rows = list(reader.fieldnames or []), list(reader)
        kept = [row for row in rows if not row.get("step") or int(float(row["step"])) < step]

        def write(tmp: Path) -> None:
            with tmp.open("w", newline="") as handle:
                writer = csv.DictWriter(handle, fieldnames=header)
                writer.writeheader()
                writer.writerows(kept)

        atomic_write(path, write)
        self.metrics_keys = header  # the file's header: later rows append under it (new keys rewrite it)


def keep_csv_rows_on_resume(loggers: Sequence[Logger]) -> None:
    """For a resumed fit: give each CSVLogger that has not opened its folder yet a writer that keeps the rows
    of the epochs before the checkpoint (Lightning's would delete them)."""
    for logger in loggers:
        # _experiment is where CSVLogger.experiment keeps its writer and creates one when it is None.
        if isinstance(logger, CSVLogger) and logger._experiment is None:
            Path(logger.log_dir).mkdir(parents=True, exist_ok=True)
            logger._experiment = ResumedCSVWriter(log_dir=logger.log_dir)
