"""``distill-train``: the command line. Checks what it can before the heavy imports, then runs distill/runner.py.

    distill-train                                  # digits, small teacher -> smaller student, softmax KD
    distill-train data=fashion_mnist teacher=cifar_resnet32x4 student=cifar_resnet8x4 loss.kd.temperature=8
    distill-train stage=teacher                    # train (and cache) the teacher alone
    distill-train stage=student                    # the undistilled baseline: the student on labels alone

torch, Lightning, timm and torchvision are imported only once Hydra has composed a config that passed the
checks of distill/config/schema.py: ``--help``, shell completion and a bad value answer in about the
time Python takes to import torch's config-free parts, not the 5-9 s of the whole stack.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from distill.cli import HydraCommand
from distill.config import CONF_DIR
from distill.config.schema import validate_config
from distill.errors import ConfigError, DatasetNotFoundError, FolderInUse, RunInterrupted, RunStopped, one_line
from distill.io import write_json

log = logging.getLogger("distill")


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="train")
def hydra_main(cfg: DictConfig) -> float | None:
    main.task()
    # wandb's own console lines (run banners, history tables, sync hints) off: the run's summary prints the sync
    # command once. WANDB_SILENT=false brings them back.
    os.environ.setdefault("WANDB_SILENT", "true")
    hydra_cfg = HydraConfig.get()
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    overrides = list(hydra_cfg.overrides.task)
    try:
        validate_config(cfg)  # the config's own values, before paying for the imports below
        from distill.runner import run_command

        return run_command(cfg, overrides, hydra_cfg.sweep.dir if multirun else None)
    except Exception as error:
        # The run folder says why it failed, so distill-summarize can list the failure beside the results; unless
        # the folder is another run's (FolderInUse), whose error.json would mark that run as failed.
        if not isinstance(error, FolderInUse):
            try:
                write_json(Path(cfg.paths.output_dir) / "error.json",
                           {"error": f"{type(error).__name__}: {error}", "overrides": overrides})
            except (OSError, RunStopped) as unwritten:  # a full disk: the message below still reaches the console
                log.warning("could not write error.json: %s", unwritten)
        if isinstance(error, RunInterrupted):  # a stopped job stops the whole sweep: no next job starts
            from distill.reliability.resume import resume_command

            log.error("%s", error)
            log.error("resume with: %s", resume_command(overrides, error.checkpoint,
                                                        hydra_cfg.sweep.dir if multirun else None,
                                                        Path(cfg.paths.output_dir)))
            sys.exit(error.code)
        if multirun or not isinstance(error, (ConfigError, DatasetNotFoundError, RunStopped)):
            raise  # in a sweep Hydra finishes the other jobs, then reports this one
        log.error("error: %s", one_line(error))
        sys.exit(error.code if isinstance(error, RunStopped) else 2)


# Unknown presets and keys (student=resnet_nope, trainer.max_epoch=3) fail before Hydra runs, as every bad value does.
main = HydraCommand(hydra_main, CONF_DIR, "train")


if __name__ == "__main__":
    main()
