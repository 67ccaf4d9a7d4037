"""Save and rebuild a pruned model without pickling: its layer sizes as JSON, its weights as safetensors.

A pruned network is its timm architecture with narrower layers, so "architecture + kwargs" no longer
rebuilds it. We record every layer's size; loading builds the architecture afresh, resizes those
layers to the record and loads the weights strictly. Nothing is unpickled, so a file from elsewhere
cannot run code.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

# The constructor sizes of the layers channel pruning changes; forward() reads these attributes.
SIZE_ATTRIBUTES: dict[type[nn.Module], tuple[str, ...]] = {
    nn.Conv1d: ("in_channels", "out_channels", "groups"),
    nn.Conv2d: ("in_channels", "out_channels", "groups"),
    nn.Conv3d: ("in_channels", "out_channels", "groups"),
    nn.Linear: ("in_features", "out_features"),
    nn.BatchNorm1d: ("num_features",),
    nn.BatchNorm2d: ("num_features",),
    nn.BatchNorm3d: ("num_features",),
    nn.GroupNorm: ("num_groups", "num_channels"),
    nn.LayerNorm: ("normalized_shape",),
}


def _attributes(module: nn.Module) -> tuple[str, ...] | None:
    return next((names for kind, names in SIZE_ATTRIBUTES.items() if type(module) is kind), None)


def layer_sizes(model: nn.Module) -> dict[str, dict[str, Any]]:
    """``{module path: {attribute: value}}`` for every sized layer of ``model`` (JSON-ready)."""
    sizes = {}
    for name, module in model.named_modules():
        attributes = _attributes(module)
        if attributes:
            sizes[name] = {attribute: _plain(getattr(module, attribute)) for attribute in attributes}
    return sizes


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def resize_layers(model: nn.Module, sizes: dict[str, dict[str, Any]],
                  state_dict: dict[str, torch.Tensor]) -> nn.Module:
    """Give ``model`` the recorded layer sizes and tensors shaped like ``state_dict``'s (values come later).

    Raises ValueError when the record names a layer the architecture lacks, so a description written
    for another model fails here rather than in a confusing shape error.
    """
    modules = dict(model.named_modules())
    unknown = sorted(set(sizes) - set(modules))
    if unknown:
        raise ValueError(f"the pruned description names layers the architecture does not have: {unknown[:5]}")
    for name, attributes in sizes.items():
        for attribute, value in attributes.items():
            setattr(modules[name], attribute, tuple(value) if isinstance(value, list) else value)
    for key, tensor in state_dict.items():
        module_name, _, leaf = key.rpartition(".")
        module = modules.get(module_name)
        if module is None:
            continue  # strict loading reports it
        current = getattr(module, leaf, None)
        if isinstance(current, torch.Tensor) and current.shape != tensor.shape:
            empty = torch.empty(tensor.shape, dtype=current.dtype)
            if isinstance(current, nn.Parameter):
                setattr(module, leaf, nn.Parameter(empty, requires_grad=current.requires_grad))
            else:
                module.register_buffer(leaf, empty)
    return model
