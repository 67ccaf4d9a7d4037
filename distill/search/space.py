"""The students a search may pick: architecture families with knobs, and optional training knobs.

``search.space`` maps a model name (any timm architecture, ours included) to its knobs, each with the
values to try: ``{small_cnn: {width: [4, 8, 16], depth: [1, 2]}, cifar_resnet: {depth: [8, 14], width: [8]}}``.
``search.training`` maps a config key to values (``{loss.kd.temperature: [2, 4, 8]}``; ``loss`` takes preset
names). A trial picks a family, then each of its knobs: a conditional space, which Optuna's samplers handle.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, OmegaConf

from distill.compress.checks import loss_preset_path
from distill.config import fit_config, to_dict
from distill.errors import ConfigError
from distill.models import check_model_name, create_model

CHOICE_TYPES = (bool, int, float, str)


@dataclass(frozen=True)
class Candidate:
    """A student architecture: a timm name and the kwargs a knob set (beside num_classes and in_chans)."""

    name: str
    kwargs: tuple[tuple[str, Any], ...]  # sorted, hashable

    @classmethod
    def of(cls, name: str, kwargs: Mapping[str, Any]) -> Candidate:
        return cls(name, tuple(sorted(kwargs.items())))

    @property
    def kwargs_dict(self) -> dict[str, Any]:
        return dict(self.kwargs)

    @property
    def label(self) -> str:
        knobs = ", ".join(f"{key}={value}" for key, value in self.kwargs)
        return f"{self.name}({knobs})" if knobs else self.name

    @property
    def key(self) -> str:
        return json.dumps({"name": self.name, "kwargs": self.kwargs_dict}, sort_keys=True)


def default_candidate(cfg: DictConfig) -> Candidate:
    """The run's own student (``student:`` of the config): the budget's reference."""
    return Candidate.of(cfg.student.name, to_dict(cfg.student.get("kwargs")))


def check_space(space: Any, training: Any) -> None:
    """Every family a known model, every knob a list of plain values; every training key a config value."""
    if not space:
        raise ConfigError("search.space is empty; give at least one family, e.g. "
                          "search.space='{small_cnn: {width: [4, 8, 16]}}'")
    for name, knobs in to_dict(space).items():
        check_model_name(name, role="search.space")
        for knob, values in (knobs or {}).items():
            check_choices(values, f"search.space.{name}.{knob}")
        check_buildable(name, knobs or {})
    for key, values in to_dict(training).items():
        check_choices(values, f"search.training.{key}")
        if key == "loss":
            for preset in values:
                loss_preset_path(preset, "search.training.loss")


def check_buildable(name: str, knobs: Mapping[str, list[Any]]) -> None:
    """Every knob is an argument of the model, and every value of it builds the model (the other knobs at their
    first value): a misspelt knob or a value the architecture refuses (cifar_resnet depth 9) fails here, not as a
    failed trial mid-search."""

    def build_error(kwargs: Mapping[str, Any]) -> str | None:
        try:
            create_model(name, 10, 3, kwargs, role="search.space")
        except (ConfigError, TypeError, ValueError, AssertionError) as error:
            return str(error).splitlines()[0][:200]
        return None

    for knob, values in knobs.items():  # each knob alone first: the one that is not an argument is named
        error = build_error({knob: values[0]})
        if error is not None:
            raise ConfigError(f"search.space.{name}.{knob}={values[0]}: {name} cannot be built with it ({error})")
    first = {knob: values[0] for knob, values in knobs.items()}
    for knob, values in knobs.items():
        for value in values:
            error = build_error({**first, knob: value})
            if error is not None:
                raise ConfigError(f"search.space.{name}.{knob}={value}: {name} cannot be built with it ({error})")


def check_choices(values: Any, key: str) -> None:
    if not isinstance(values, list) or not values:
        raise ConfigError(f"{key}={values!r} must be a non-empty list of values to try, e.g. [4, 8, 16]")
    bad = [value for value in values if not isinstance(value, CHOICE_TYPES)]
    if bad:
        raise ConfigError(f"{key} has values {bad} that are not numbers, strings or booleans")


def suggest(trial: Any, space: Any, training: Any) -> tuple[Candidate, dict[str, Any]]:
    """The trial's student and its training values (config key -> value)."""
    families = to_dict(space)
    family = trial.suggest_categorical("family", sorted(families))
    kwargs = {knob: trial.suggest_categorical(f"{family}.{knob}", list(values))
              for knob, values in sorted((families[family] or {}).items())}
    chosen = {key: trial.suggest_categorical(key, list(values)) for key, values in sorted(to_dict(training).items())}
    return Candidate.of(family, kwargs), chosen


def candidate_of(params: Mapping[str, Any]) -> tuple[Candidate, dict[str, Any]]:
    """The student and training values of a finished trial's parameters (``suggest``'s names)."""
    family = params["family"]
    prefix = f"{family}."
    kwargs = {name.removeprefix(prefix): value for name, value in params.items() if name.startswith(prefix)}
    training = {name: value for name, value in params.items() if name != "family" and not name.startswith(prefix)}
    return Candidate.of(family, kwargs), training


def apply(cfg: DictConfig, candidate: Candidate, training: Mapping[str, Any], **overrides: Any) -> DictConfig:
    """A copy of ``cfg`` that trains ``candidate`` with the training values (and dotted-key ``overrides``)."""
    trial_cfg = fit_config(cfg, **overrides)
    trial_cfg.student = OmegaConf.create({"name": candidate.name, "kwargs": candidate.kwargs_dict})
    for key, value in training.items():
        if key == "loss":
            trial_cfg.loss = OmegaConf.load(loss_preset_path(str(value), "search.training.loss"))
        else:
            OmegaConf.update(trial_cfg, key, value, merge=False)
    return trial_cfg
