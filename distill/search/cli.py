"""``distill-search``: the command line (conf/search_run.yaml); the work is distill/search/run.py.

    distill-search                                            the default space on digits, budget: the default student
    distill-search search.budget.metric=macs search.trials=40
    distill-search hydra.run.dir=outputs/search/<run>         again in the same folder: the search continues
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from distill.cli import HydraCommand, fail
from distill.config import CONF_DIR
from distill.config.schema import validate_config
from distill.errors import ConfigError, DatasetNotFoundError, FolderInUse, RunStopped

log = logging.getLogger("distill")


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="search_run")
def hydra_main(cfg: DictConfig) -> None:
    main.task()
    os.environ.setdefault("WANDB_SILENT", "true")
    try:
        validate_config(cfg)
        if cfg.stage != "distill":
            raise ConfigError(f"distill-search distils every candidate: stage={cfg.stage} is not for it; leave stage "
                              "at distill")
        from distill.search.settings import check_settings

        check_settings(cfg)
        from distill.search.run import search

        result = search(cfg, Path(cfg.paths.output_dir))
    except (ConfigError, DatasetNotFoundError, FolderInUse) as error:
        fail(error)  # one line on stderr, exit code 2: as the refusals before Hydra starts
    except RunStopped as error:
        log.error("error: %s", error)
        sys.exit(error.code)
    print((Path(cfg.paths.output_dir) / "search.md").read_text())
    print(f"search folder: {cfg.paths.output_dir}  (trials: trials.csv, front.png; "
          f"optuna-dashboard sqlite:///{Path(cfg.paths.output_dir).resolve() / 'study.db'})")
    if result.get("best") is None:
        sys.exit(2)


main = HydraCommand(hydra_main, CONF_DIR, "search_run")

if __name__ == "__main__":
    main()
