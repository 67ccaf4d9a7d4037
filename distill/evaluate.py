"""``distill-eval``: the command line; the work is distill/evaluation.py, imported once the config is composed.

See conf/eval.yaml (or ``distill-eval --help``) for the forms it takes.
"""

from __future__ import annotations

from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from distill.cli import HydraCommand, fail
from distill.config import CONF_DIR
from distill.errors import ConfigError, DatasetNotFoundError


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="eval")
def hydra_main(cfg: DictConfig) -> None:
    main.task()
    from distill.evaluation import evaluate

    output_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        report = evaluate(cfg, output_dir)
    except (ConfigError, DatasetNotFoundError) as error:
        fail(error)  # one line on stderr, exit code 2: as the refusals before Hydra starts
    from distill.report import report_markdown  # imports torch: after the inputs were checked

    print(report_markdown(report))
    print(f"report folder: {output_dir}")


main = HydraCommand(hydra_main, CONF_DIR, "eval")

if __name__ == "__main__":
    main()
