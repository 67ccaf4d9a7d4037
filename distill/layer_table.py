"""The work of ``distill-layers`` (distill/layers.py): a model's layers with their output shapes for the data's
input size.

The names are what loss options such as ``loss.fitnet.student_layer`` take; ``@N`` aliases
(``feature_info[N]``), ``pre_logits`` and ``<layer>:pre_act`` (pre-activation) rows are shown too.
"""

from __future__ import annotations

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch import nn

from distill.feature_taps import PRE_ACT, PRE_LOGITS, FeatureTaps, feature_layer_names, pre_activation_layers
from distill.models import check_input_fits, classifier_name, create_model


def layer_table(model: nn.Module, input_shape: tuple[int, ...]) -> list[tuple[str, str, str, int]]:
    """(path, module type, output shape, own parameters) for every module, in call order of a dry run."""
    rows: dict[str, tuple[str, str, str, int]] = {}
    handles = []
    for path, module in model.named_modules():
        if not path:
            continue

        def hook(module: nn.Module, inputs: tuple, output: object, path: str = path) -> None:
            shape = tuple(output.shape[1:]) if isinstance(output, torch.Tensor) else type(output).__name__
            own = sum(p.numel() for p in module.parameters(recurse=False))
            rows.setdefault(path, (path, type(module).__name__, str(shape), own))

        handles.append(module.register_forward_hook(hook))
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, *input_shape))
    finally:
        for handle in handles:
            handle.remove()
    return list(rows.values())


def pre_activation_shapes(model: nn.Module, input_shape: tuple[int, ...]) -> dict[str, str]:
    """``{"layer2:pre_act": "(64, 16, 16)", ...}``: every pre-activation a loss term can request, by a dry run."""
    taps = FeatureTaps(model, pre_activation_layers(model), "model")
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, *input_shape))
    finally:
        taps.remove()
    return {name: str(tuple(feature.shape[1:])) for name, feature in taps.pop().items()}


def format_layers(role: str, name: str, model: nn.Module, input_shape: tuple[int, ...]) -> str:
    aliases = {path: f"@{index}" for index, path in enumerate(feature_layer_names(model))}
    classifier = classifier_name(model)
    pre_activations = pre_activation_shapes(model, input_shape)
    lines = [f"{role} {name}: input {tuple(input_shape)}",
             f"  {'layer':<40}{'alias':<17}{'type':<20}{'output (per sample)':<26}{'params':>10}"]
    for path, kind, shape, params in layer_table(model, input_shape):
        alias = aliases.get(path, "")
        if path == classifier:
            alias = f"input={PRE_LOGITS}"
        lines.append(f"  {path:<40}{alias:<17}{kind:<20}{shape:<26}{params:>10,}")
        pre_act = f"{path}:{PRE_ACT}"
        if pre_act in pre_activations:
            pre_alias = f"{aliases[path]}:{PRE_ACT}" if path in aliases else ""
            lines.append(f"  {pre_act:<40}{pre_alias:<17}{'pre-activation':<20}{pre_activations[pre_act]:<26}{0:>10,}")
    return "\n".join(lines)


def print_layers(cfg: DictConfig) -> None:
    """The layer tables of ``cfg.show`` (student, teacher or both) for the input of ``cfg.data``."""
    show = cfg.get("show", "student")
    datamodule = instantiate(cfg.data)
    roles = ("student", "teacher") if show == "both" else (show,)
    for role in roles:
        model_cfg = cfg[role]
        model = create_model(model_cfg.name, datamodule.num_classes, datamodule.in_chans, model_cfg.get("kwargs"),
                             role=role)
        check_input_fits(model, datamodule.input_shape, role, model_cfg.name)
        print(format_layers(role, model_cfg.name, model, datamodule.input_shape))
