"""Intermediate features by module path, taken with forward hooks so no model is edited.

``FeatureTaps(model, ["layer2", "pre_logits", "@-1", "layer3:pre_act"])`` records ``layer2``'s output,
the classifier's input, the deepest ``feature_info`` stage and ``layer3``'s pre-activation (the input of
its last block's final activation) on every forward pass. Paths are looked up through wrappers (DDP's
``module.``, ``torch.compile``'s ``_orig_mod.``); unknown paths fail at construction with the list of
valid ones.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from distill.errors import ConfigError, close_matches
from distill.models import classifier_name

# The input of the classifier: the penultimate embedding, on any timm model.
PRE_LOGITS = "pre_logits"
# Suffix for the pre-activation of a block: the input of its final activation ("pre-ReLU").
PRE_ACT = "pre_act"
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


def split_option(name: str) -> tuple[str, str | None]:
    """``"layer2:pre_act"`` -> ``("layer2", "pre_act")``; a plain name has no option."""
    base, _, option = name.partition(":")
    return base, (option or None)


# Where torch and timm define their activation modules (nn.ReLU, nn.GELU, timm's Swish, ...).
ACTIVATION_MODULES = ("torch.nn.modules.activation", "timm.layers.activations", "timm.layers.activations_me")


def is_activation(module: nn.Module) -> bool:
    return type(module).__module__ in ACTIVATION_MODULES


def last_block(module: nn.Module) -> nn.Module | None:
    """The block whose final activation ends ``module``: itself if it has activation children, else its last child's.

    A stage (``layer2``, a Sequential of residual blocks) ends in its last block; a block (a CIFAR/timm
    ResNet BasicBlock, a conv-BN-ReLU Sequential) has activation modules among its direct children.
    """
    current: nn.Module | None = module
    while current is not None:
        if any(is_activation(child) for child in current.children()):
            return current
        children = list(current.children())
        current = children[-1] if isinstance(current, (nn.Sequential, nn.ModuleList)) and children else None
    return None


def pre_activation_modules(model: nn.Module, name: str,
                           role: str) -> tuple[nn.Module, nn.modules.batchnorm._BatchNorm | None]:
    """(final activation, BatchNorm before it or None) of the block that ends layer ``name``.

    The final activation is the block's last registered activation child (``relu`` of our CIFAR ResNets,
    ``act2``/``act3`` of timm's BasicBlock/Bottleneck); its input is the pre-activation feature (for a
    residual block: BN output plus shortcut, RepDistiller's and mdistiller's ``preact``). The BatchNorm is
    the block's last registered BatchNorm child (``bn2``/``bn3``), the one OFD reads its margins from.
    """
    base, _ = split_option(name)
    block = last_block(resolve_layer(model, base, role))
    if block is None:
        raise ConfigError(
            f"{role} layer '{name}': '{base}' ends in no block with an activation module (nn.ReLU, ...), so it "
            f"has no pre-activation; pick a stage or block of a conv net (distill-layers lists ':{PRE_ACT}' layers)"
        )
    activation = [child for child in block.children() if is_activation(child)][-1]
    norms = [child for child in block.children() if isinstance(child, nn.modules.batchnorm._BatchNorm)]
    return activation, (norms[-1] if norms else None)


def pre_activation_layers(model: nn.Module) -> list[str]:
    """Every module path that has a pre-activation (``<path>:pre_act`` is a valid layer name)."""
    inner = unwrap(model)
    return [f"{path}:{PRE_ACT}" for path, module in inner.named_modules() if path and last_block(module) is not None]


class FeatureTaps:
    """Forward hooks that keep the outputs of the named layers from the latest forward pass."""

    def __init__(self, model: nn.Module, names: Iterable[str], role: str = "model") -> None:
        self.role = role
        self.features: dict[str, torch.Tensor] = {}
        self._handles = []
        for name in dict.fromkeys(names):  # unique, in order
            base, option = split_option(name)
            if option not in (None, PRE_ACT):
                raise ConfigError(f"{role} layer '{name}': unknown option ':{option}'; the only one is ':{PRE_ACT}' "
                                  "(the input of the block's final activation)")
            if option == PRE_ACT:
                activation, _ = pre_activation_modules(model, name, role)
                # The activation may run in place (and, shared, more than once): keep a copy of its last input.
                handle = activation.register_forward_pre_hook(self._keep_input(name, copy=True))
            elif resolve_layer_path(model, base, role) == PRE_LOGITS:
                handle = resolve_layer(model, base, role).register_forward_pre_hook(self._keep_input(name))
            else:
                handle = resolve_layer(model, base, role).register_forward_hook(self._keep_output(name))
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

    def _keep_input(self, name: str, copy: bool = False):
        def hook(module: nn.Module, inputs: tuple) -> None:
            self._store(name, inputs[0].clone() if copy else inputs[0])

        return hook

    def pop(self) -> dict[str, torch.Tensor]:
        """The features of the latest forward pass; cleared so stale tensors are never reused."""
        features, self.features = self.features, {}
        return features

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
