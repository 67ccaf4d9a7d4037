"""Intermediate features by module path, taken with forward hooks so no model is edited.

``FeatureTaps(model, ["layer2", "pre_logits", "@-1"])`` records ``layer2``'s output, the
classifier's input and the deepest ``feature_info`` stage on every forward pass. Paths are looked up
through wrappers (DDP's ``module.``, ``torch.compile``'s ``_orig_mod.``); unknown paths fail at
construction with the list of valid ones.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from distill.errors import ConfigError, close_matches
from distill.models import classifier_name

# The input of the classifier: the penultimate embedding, on any timm model.
PRE_LOGITS = "pre_logits"
WRAPPER_PREFIXES = ("module.", "_orig_mod.")


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside DDP / torch.compile wrappers."""
    while True:
        inner = getattr(model, "module", None) or getattr(model, "_orig_mod", None)
        if not isinstance(inner, nn.Module):
            return model
        model = inner


def normalize_layer_name(name: str) -> str:
    while name.startswith(WRAPPER_PREFIXES):
        name = name.split(".", 1)[1]
    return name


def layer_names(model: nn.Module) -> list[str]:
    """Every hookable module path of ``model`` (wrappers looked through), plus ``pre_logits``."""
    names = [name for name, _ in unwrap(model).named_modules() if name]
    return names + ([PRE_LOGITS] if classifier_name(unwrap(model)) else [])


def feature_layer_names(model: nn.Module) -> list[str]:
    """The module paths a timm model's ``feature_info`` names (its stages, shallow to deep)."""
    info = getattr(unwrap(model), "feature_info", None)
    if info is None:
        return []
    entries = info.get_dicts() if hasattr(info, "get_dicts") else info
    return [entry["module"] for entry in entries if isinstance(entry, dict) and "module" in entry]


def resolve_layer_path(model: nn.Module, name: str, role: str) -> str:
    """``@N`` means ``feature_info[N]`` (``@-1``: the deepest stage), so presets work across architectures."""
    path = normalize_layer_name(name)
    if not path.startswith("@"):
        return path
    stages = feature_layer_names(model)
    try:
        return stages[int(path[1:])]
    except (ValueError, IndexError):
        raise ConfigError(
            f"{role} layer '{name}': '@N' picks feature_info[N] and this model's feature layers are "
            f"{stages or 'none (no feature_info)'}; give an index in range or a module path"
        ) from None


def resolve_layer(model: nn.Module, name: str, role: str) -> nn.Module:
    inner = unwrap(model)
    path = resolve_layer_path(model, name, role)
    if path == PRE_LOGITS:
        classifier = classifier_name(inner)
        if classifier is None:
            raise ConfigError(f"{role} has no classifier (get_classifier), so '{PRE_LOGITS}' is undefined; "
                              "name a layer instead")
        return inner.get_submodule(classifier)
    try:
        return inner.get_submodule(path)
    except AttributeError:
        pass
    names = layer_names(model)
    hint = close_matches(path, names)
    preferred = feature_layer_names(model)
    raise ConfigError(
        f"unknown {role} layer '{name}'"
        + (f"; did you mean: {hint}?" if hint else "")
        + (f" Feature layers: {', '.join(preferred)}." if preferred else "")
        + " List all layers with their shapes: distill-layers"
    )


class FeatureTaps:
    """Forward hooks that keep the outputs of the named layers from the latest forward pass."""

    def __init__(self, model: nn.Module, names: Iterable[str], role: str = "model") -> None:
        self.role = role
        self.features: dict[str, torch.Tensor] = {}
        self._handles = []
        for name in dict.fromkeys(names):  # unique, in order
            module = resolve_layer(model, name, role)
            if resolve_layer_path(model, name, role) == PRE_LOGITS:
                handle = module.register_forward_pre_hook(self._keep_input(name))
            else:
                handle = module.register_forward_hook(self._keep_output(name))
            self._handles.append(handle)

    def _store(self, name: str, value: object) -> None:
        if not isinstance(value, torch.Tensor):
            raise ConfigError(
                f"{self.role} layer '{name}' returns {type(value).__name__}, not a tensor; "
                "choose a layer whose output is a tensor (distill-layers lists them)"
            )
        self.features[name] = value

    def _keep_output(self, name: str):
        def hook(module: nn.Module, inputs: tuple, output: object) -> None:
            self._store(name, output)

        return hook

    def _keep_input(self, name: str):
        def hook(module: nn.Module, inputs: tuple) -> None:
            self._store(name, inputs[0])

        return hook

    def pop(self) -> dict[str, torch.Tensor]:
        """The features of the latest forward pass; cleared so stale tensors are never reused."""
        features, self.features = self.features, {}
        return features

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
