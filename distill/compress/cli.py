"""``distill-compress run=<run folder> compress=int8``: compress the exported student of a finished run.

The run's own config supplies the data, the loss and the training settings a recovery step needs; the
new files (``student.onnx``, ``student.int8.onnx``, ``pruned.*``, ``qat.int8.onnx``) and the variant
rows of the report go into the run folder, beside ``student.json``.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from distill.cli import HydraCommand, fail
from distill.compress.settings import check_settings
from distill.config import CONF_DIR, load_config
from distill.errors import ConfigError, DatasetNotFoundError, RunStopped
from distill.run_files import check_exported, read_run_config

log = logging.getLogger("distill")


def run_folder(run: Any) -> Path:
    """The run folder ``run`` names, checked to hold a distill run's config and an exported student.

    Every check runs before anything is written: the new files go into this folder, which may not be ours.
    """
    if not run:
        raise ConfigError("give the run to compress: distill-compress run=outputs/distill/<date_time> compress=int8")
    folder = Path(str(run)).expanduser()
    hint = "give a folder made by distill-train, e.g. outputs/distill/<date_time>"
    if not folder.exists():
        raise ConfigError(f"run={folder} is not a distill run folder: it does not exist; {hint}")
    if not folder.is_dir():
        raise ConfigError(f"run={folder} is not a distill run folder: it is a file; {hint}")
    if not (folder / ".hydra" / "config.yaml").is_file():
        raise ConfigError(f"run={folder} is not a distill run folder (no .hydra/config.yaml); {hint}")
    read_run_config(folder)
    if not (folder / "student.json").is_file():
        raise ConfigError(f"run={folder} has no exported student (student.json): compress a run that finished "
                          "(distill-train exports the student at its end), or finish it with ckpt_path=<its "
                          "checkpoints/last.ckpt>")
    check_exported(folder / "student.json")  # its keys and a whole weights file, before torch is imported
    return folder


def compress_run(run: Any, settings: DictConfig) -> dict[str, Any] | None:
    """Rebuild the run's data, student and teacher (exported to ONNX beside the student); run the steps."""
    folder = run_folder(run)
    from hydra.utils import instantiate  # here, not at the top: --help and bad input answer without torch

    from distill.export import load_exported

    run_cfg = load_config(folder / ".hydra" / "config.yaml")
    cfg = OmegaConf.merge(run_cfg, {"compress": settings})
    assert isinstance(cfg, DictConfig)
    steps = check_settings(settings, has_teacher=run_cfg.stage == "distill")
    datamodule = instantiate(run_cfg.data)
    datamodule.check()
    student, description = load_exported(folder / "student.json")
    teacher = None
    if steps and run_cfg.stage == "distill":  # the teacher is exported to ONNX (and may teach the pruned net)
        from distill.evaluation import run_entries

        teacher = next((entry.model for entry in run_entries(folder, run_cfg, datamodule) if entry.role == "teacher"),
                       None)
        if teacher is None:  # its weights are gone (metrics.json's teacher entry): a step it teaches refuses
            log.warning("run=%s names no teacher weights that still exist; no teacher.onnx", folder)
            check_settings(settings, has_teacher=False)
    from distill.compress.pipeline import compress

    return compress(cfg, student, teacher, datamodule, folder, description["architecture"],
                    description["model_kwargs"])


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="compress_run")
def hydra_main(cfg: DictConfig) -> None:
    main.task()
    try:
        result = compress_run(cfg.run, cfg.compress)
    except (ConfigError, DatasetNotFoundError) as error:
        fail(error)  # one line on stderr, exit code 2: as the refusals before Hydra starts
    except RunStopped as error:  # a step failed: the variants made before it are in the report
        log.error("error: %s", error)
        sys.exit(error.code)
    if result is None:
        presets = sorted(path.stem for path in (CONF_DIR / "compress").glob("*.yaml") if path.stem != "none")
        print(f"nothing to do: compress=none; choose compress={', '.join(presets)}")
        return
    for row in result["variants"]:
        print(f"{row['variant']:<24}{row['bytes']:>10,} B{100 * row['accuracy']['top1']:>9.2f} %"
              f"{row['speed']['latency_ms_batch1']['median']:>9.3f} ms  {row['file']}")
    print(f"efficiency report: {result['files']['report']}")


main = HydraCommand(hydra_main, CONF_DIR, "compress_run")


if __name__ == "__main__":
    main()
