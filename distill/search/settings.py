"""``cfg.search`` checked before anything runs, from the config alone (no torch, no optuna): a bad value is
refused in about the time the command takes to start. The space's models are checked last, through timm's
registry."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig

from distill.cli import has_key, sibling_keys, unknown_key
from distill.config import to_dict
from distill.errors import ConfigError

SAMPLERS = ("tpe", "random")
PRUNERS = ("hyperband", "successive_halving", "median", "none")
METRICS = ("latency_ms", "bytes", "macs")
RUNTIMES = ("onnx_int8", "onnx_fp32", "pytorch")


def check_settings(cfg: DictConfig) -> None:
    """``cfg.search`` before anything runs (and each training key against the run's config)."""
    settings = cfg.search
    # The values first, from the config alone; then the space, which asks timm's registry for its models.
    for key in ("trials", "trial_epochs"):
        value = settings[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"search.{key}={value} must be a whole number >= 1")
    if settings.sampler not in SAMPLERS:
        raise ConfigError(f"search.sampler={settings.sampler} is not one of: {', '.join(SAMPLERS)}")
    if settings.pruner not in PRUNERS:
        raise ConfigError(f"search.pruner={settings.pruner} is not one of: {', '.join(PRUNERS)}")
    check_budget(settings.budget)
    for key in to_dict(settings.get("training")):
        if key != "loss" and not has_key(cfg, key):
            raise ConfigError(f"search.training.{key}: {unknown_key(key, sibling_keys(cfg, key) or [])}; the keys "
                              "searched must exist (add a loss term with +loss.<term>... first)")
    from distill.search.space import check_space  # imports timm and torch

    check_space(settings.space, settings.get("training"))


def check_budget(budget: Any) -> None:
    """``search.budget``: the metric the front is drawn against, a runtime, and limits (each a number, ``default``
    for the default student's value, or null for none), at least one of them set."""
    if budget.metric not in METRICS:
        raise ConfigError(f"search.budget.metric={budget.metric} is not one of: {', '.join(METRICS)}")
    if budget.runtime not in RUNTIMES:
        raise ConfigError(f"search.budget.runtime={budget.runtime} is not one of: {', '.join(RUNTIMES)}")
    limits = to_dict(budget.get("limits"))
    unknown = sorted(set(limits) - set(METRICS))
    if unknown:
        raise ConfigError(f"search.budget.limits has unknown metric(s) {unknown}; choose from: {', '.join(METRICS)}")
    for metric, limit in limits.items():
        if not (limit is None or limit == "default"
                or (isinstance(limit, (int, float)) and not isinstance(limit, bool) and limit > 0)):
            raise ConfigError(f"search.budget.limits.{metric}={limit} must be a number > 0, 'default' (the default "
                              f"student's {metric} on {budget.runtime}) or null (no limit)")
    if all(limit is None for limit in limits.values()):
        raise ConfigError("search.budget.limits sets no limit; give at least one, e.g. "
                          f"search.budget.limits.{budget.metric}=default")
    for key in ("threads", "repeats"):
        value = budget[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"search.budget.{key}={value} must be a whole number >= 1")
