"""Checks of single ``compress`` values, shared by the steps: each names the key and what it must be.

Only the standard library and the config are touched here (``distill-train`` imports the checks on every run).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from distill.config import CONF_DIR
from distill.errors import ConfigError


def check_choice(value: Any, allowed: tuple[str, ...], key: str) -> None:
    if value not in allowed:
        raise ConfigError(f"compress.{key}={value} is not one of: {', '.join(allowed)}")


def check_positive(value: Any, key: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"compress.{key}={value} must be a whole number >= 1")


def check_number(value: Any, key: str, low: float, high: float | None = None, meaning: str = "") -> None:
    """A real number in (low, high) (high: None for no upper bound)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (value > low and (high is None
                                                                                              or value < high)):
        bound = f"between {low} and {high}" if high is not None else f"greater than {low}"
        raise ConfigError(f"compress.{key}={value} must be a number strictly {bound}{meaning}")


def check_flag(value: Any, key: str) -> None:
    if not isinstance(value, bool):
        raise ConfigError(f"compress.{key}={value} must be true or false")


def check_count(value: Any, key: str) -> None:
    """A whole number >= 0."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"compress.{key}={value} must be a whole number >= 0")


def loss_preset_path(name: str, key: str) -> Path:
    """The file of a loss preset named by config key ``key`` (``kd`` -> conf/loss/kd.yaml)."""
    path = CONF_DIR / "loss" / f"{name}.yaml"
    if not path.is_file():
        presets = sorted(p.stem for p in (CONF_DIR / "loss").glob("*.yaml"))
        raise ConfigError(f"{key}={name} is not a loss preset; choose one of: {', '.join(presets)} "
                          "(or null for the run's own loss)")
    return path
