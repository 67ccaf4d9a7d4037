"""``distill-eval``: the command line; the work is distill/evaluation.py, imported once the config is composed.

See conf/eval.yaml (or ``distill-eval --help``) for the forms it takes.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from distill.cli import HydraCommand
from distill.config import CONF_DIR
from distill.errors import ConfigError, DatasetNotFoundError

log = logging.getLogger("distill")


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="eval")
def hydra_main(cfg: DictConfig) -> None:
    main.task()
    from distill.evaluation import evaluate
    from distill.report import report_markdown

    output_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        report = evaluate(cfg, output_dir)
    except (ConfigError, DatasetNotFoundError) as error:
        log.error("error: %s", error)
        sys.exit(2)
    print(report_markdown(report))
    print(f"report folder: {output_dir}")


main = HydraCommand(hydra_main, CONF_DIR, "eval")

if __name__ == "__main__":
    main()
