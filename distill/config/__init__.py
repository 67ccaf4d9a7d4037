"""Where the Hydra configs live and the resolvers they use; imported by every command."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

from omegaconf import DictConfig, OmegaConf

from distill.wandb_mode import wandb_offline

# conf/ sits beside the package in the repository (the project installs in editable mode).
CONF_DIR = Path(__file__).resolve().parent.parent.parent / "conf"

OmegaConf.register_new_resolver("wandb_offline", wandb_offline, replace=True)

# Data settings that say where files live and how fast batches arrive, never which images a model sees: a
# cache key leaves them out and a resumed run may change them. Each user adds what else it may ignore.
DATA_LOADING_KEYS = ("num_workers", "pin_memory", "root", "download")


def to_dict(node: Any) -> dict[str, Any]:
    """A config node (or None) as a plain, resolved dict."""
    if node is None:
        return {}
    container = OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else dict(node)
    assert isinstance(container, dict), f"expected a mapping, got {type(container).__name__}"
    return cast(dict[str, Any], container)


def load_config(path: str | Path) -> DictConfig:
    """A YAML config file (a run's ``.hydra/config.yaml``) as a DictConfig."""
    cfg = OmegaConf.load(path)
    if not isinstance(cfg, DictConfig):
        raise ValueError(f"{path} holds a list, not a config mapping")
    return cfg


def fit_config(cfg: DictConfig, **overrides: Any) -> DictConfig:
    """A copy of ``cfg`` with dotted-key overrides (interpolations elsewhere follow them)."""
    copy = OmegaConf.create(OmegaConf.to_container(cfg, resolve=False))
    assert isinstance(copy, DictConfig)
    for key, value in overrides.items():
        OmegaConf.update(copy, key, value, merge=False)
    return copy


def instantiate_checked(node: Any, **kwargs: Any) -> Any:
    """``hydra.utils.instantiate``, with our own refusals (ConfigError, DatasetNotFoundError) raised as they are:
    Hydra wraps whatever a constructor raises in an InstantiationException whose message is a traceback-like
    block, not the one line the refusal was written to be."""
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    from distill.errors import ConfigError, DatasetNotFoundError

    try:
        return instantiate(node, **kwargs)
    except InstantiationException as error:
        if isinstance(error.__cause__, (ConfigError, DatasetNotFoundError)):
            raise error.__cause__ from None
        raise
