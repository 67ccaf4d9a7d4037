"""``distill-layers``: list a model's layers with their output shapes for the data's input size.

The command line; the work is distill/layer_table.py, imported once the overrides have passed their checks.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from distill.cli import check_presets, fail
from distill.config import CONF_DIR
from distill.errors import ConfigError, DatasetNotFoundError

HELP = """distill-layers: the layers of the student (and/or teacher) with their output shapes for the data's input,
as the names that feature losses take (loss.fitnet.student_layer=layer2, @-2 aliases, <layer>:pre_act).
It composes the same config as distill-train from the same overrides, and makes no run folder.

Usage: distill-layers [+show=student|teacher|both] [group=option ...] [key=value ...]

  distill-layers student=cifar_resnet8x4 data=cifar100 +show=both
  distill-layers +show=teacher teacher=timm teacher.name=resnet18 data=image_folder data.root=<folder>

Groups and options: distill-train --help."""

SHOW = ("student", "teacher", "both")


def main(argv: Sequence[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if "-h" in args or "--help" in args:
        print(HELP)
        return
    flags = [arg for arg in args if arg.startswith("-")]
    if flags:
        fail(f"distill-layers takes overrides only (key=value), not {' '.join(flags)}; see distill-layers --help")
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException

    try:
        check_presets(args, CONF_DIR)
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose("train", overrides=args)
        if cfg.get("show", "student") not in SHOW:
            raise ConfigError(f"show={cfg.show} is not one of: {', '.join(SHOW)} (e.g. +show=both)")
        from distill.layer_table import print_layers

        print_layers(cfg)
    except (ConfigError, DatasetNotFoundError) as error:
        fail(error)
    except HydraException as error:
        fail(str(error).splitlines()[0])


if __name__ == "__main__":
    main()
