"""Where the Hydra configs live and the resolvers they use; imported by every command."""

from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf

from distill.tracking import wandb_offline

# conf/ sits beside the package in the repository (the project installs in editable mode).
CONF_DIR = Path(__file__).resolve().parent.parent / "conf"

OmegaConf.register_new_resolver("wandb_offline", wandb_offline, replace=True)
