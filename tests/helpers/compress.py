"""What the compression tests share: the digits data, the default student, composed compress settings."""

from __future__ import annotations

from typing import Any

import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf
from torch import nn

from distill.config import CONF_DIR
from distill.models import create_model

FAST_RUNTIME = ["compress.runtime.warmup=1", "compress.runtime.repeats=3", "compress.runtime.throughput_batch_size=16"]


def compress_settings(option: str, *overrides: str) -> DictConfig:
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("compress_run", overrides=[f"compress={option}", *FAST_RUNTIME, *overrides]).compress


def digits_data() -> Any:
    """The digits data exactly as conf/data/digits.yaml builds it (normalised); each test module's
    ``digits`` fixture builds it once."""
    from hydra.utils import instantiate

    datamodule = instantiate(OmegaConf.load(CONF_DIR / "data" / "digits.yaml"))
    datamodule.setup()
    return datamodule


def default_student() -> nn.Module:
    student_cfg = OmegaConf.load(CONF_DIR / "student" / "small_cnn.yaml")
    torch.manual_seed(0)
    return create_model(student_cfg.name, 10, 1, student_cfg.kwargs).eval()
