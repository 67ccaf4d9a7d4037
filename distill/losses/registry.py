"""Loss terms by name: ``loss: {ce: {weight: 1}, kd: {weight: 0.9, temperature: 4}}`` builds two terms."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

from torch import nn

from distill.errors import ConfigError, close_matches
from distill.losses.base import LossTerm
from distill.losses.per_teacher import PerTeacherTerm, teacher_index

LOSSES: dict[str, type[LossTerm]] = {}


def register_loss(name: str) -> Callable[[type[LossTerm]], type[LossTerm]]:
    def decorator(cls: type[LossTerm]) -> type[LossTerm]:
        if name in LOSSES:
            raise ValueError(f"loss '{name}' is registered twice ({LOSSES[name].__name__} and {cls.__name__})")
        LOSSES[name] = cls
        return cls

    return decorator


def build_loss_term(name: str, options: Mapping[str, Any]) -> LossTerm:
    base, at, suffix = name.partition("@")
    if at:  # ``kd@1``: the term against one teacher of an ensemble
        return PerTeacherTerm(name, build_loss_term(base, options), teacher_index(name, suffix))
    if name not in LOSSES:
        hint = close_matches(name, LOSSES)
        raise ConfigError(
            f"unknown loss '{name}'" + (f" (did you mean {hint}?)" if hint else "")
            + f"; available: {', '.join(sorted(LOSSES))}"
        )
    cls = LOSSES[name]
    signature = inspect.signature(cls.__init__)
    accepted = [p for p in signature.parameters if p != "self"]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ConfigError(f"loss '{name}' has no option(s) {unknown}; its options are: {', '.join(accepted)}")
    missing = [
        p.name for p in signature.parameters.values()
        if p.name != "self" and p.default is inspect.Parameter.empty and p.name not in options
    ]
    if missing:
        raise ConfigError(
            f"loss '{name}' needs option(s) {missing}; set e.g. loss.{name}.{missing[0]}=<value> "
            f"(the preset conf/loss/{name}.yaml has working values)"
        )
    return cls(**options)


def build_loss_terms(loss_config: Mapping[str, Mapping[str, Any] | None]) -> nn.ModuleDict:
    """One module per configured term, in config order; an entry set to null is left out."""
    terms = {name: build_loss_term(name, dict(options)) for name, options in loss_config.items() if options is not None}
    if not terms:
        raise ConfigError("the loss has no terms; choose a preset (loss=kd) or add one (+loss.ce.weight=1)")
    return nn.ModuleDict(terms)
