"""Export a trained model as safetensors + a JSON that names its timm architecture and kwargs.

The pair rebuilds the model with plain ``timm.create_model`` (after ``import students`` for our own
architectures), without this framework's Lightning classes or pickled objects. A pruned model's JSON
also lists its layer sizes (``layers``), which ``load_exported`` applies before loading the weights. Given the
data module, it also records how a raw image becomes the model's input (``preprocessing``) and the class names
in index order (``classes``): what anyone running the model elsewhere needs (docs/runs.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import timm
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from distill.errors import ConfigError, quoted
from distill.io import atomic_write, write_json
from distill.layer_sizes import resize_layers
from distill.models import check_model_name
from distill.run_files import read_description, unreadable_weights, weights_path


def model_usage(datamodule: Any) -> dict[str, Any]:
    """``preprocessing`` (the data module's description of its evaluation transform) and ``classes`` (the class
    names in index order) of a model trained on ``datamodule``; empty without one."""
    if datamodule is None:
        return {}
    return {"preprocessing": datamodule.preprocessing(), "classes": list(datamodule.class_names())}


def export_model(model: nn.Module, architecture: str, model_kwargs: dict[str, Any], folder: str | Path,
                 stem: str = "student", extra: dict[str, Any] | None = None, datamodule: Any = None) -> Path:
    """Write ``<folder>/<stem>.safetensors`` and ``<folder>/<stem>.json``; return the JSON's path.

    With the ``datamodule`` the model was trained on, the JSON also holds its ``preprocessing`` and ``classes``.
    """
    folder = Path(folder)
    weights_path = folder / f"{stem}.safetensors"
    state_dict = {key: value.detach().cpu().contiguous() for key, value in model.state_dict().items()}
    atomic_write(weights_path, lambda tmp: save_file(state_dict, str(tmp), metadata={"architecture": architecture}))
    description = {
        "architecture": architecture,
        "model_kwargs": model_kwargs,
        "weights": weights_path.name,
        "imports": ["students"],  # registers our architectures into timm before create_model
        **model_usage(datamodule),
        **(extra or {}),
    }
    return write_json(folder / f"{stem}.json", description)


def load_exported(json_path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild an exported model (eval mode) and return it with its description.

    Every way the pair can be wrong (a .json of another kind, an unknown architecture, a missing, cut or
    mismatched weights file) is a ConfigError that names the file.
    """
    json_path = Path(json_path).expanduser()
    description = read_description(json_path)
    model = build_described(json_path, description)
    weights = weights_path(json_path, description)
    state_dict = read_safetensors(weights)
    try:
        if "layers" in description:  # a pruned model: its layers are narrower than the architecture's
            resize_layers(model, description["layers"], state_dict)
        model.load_state_dict(state_dict, strict=True)
    except (RuntimeError, ValueError, TypeError, KeyError, AttributeError) as error:
        raise ConfigError(f"the weights in {weights} do not fit the model {json_path} describes "
                          f"({description['architecture']} {description['model_kwargs']}): {quoted(error)}; export "
                          "the pair again, or give the .json that was written with these weights") from None
    return model.eval(), description


def build_described(json_path: Path, description: dict[str, Any]) -> nn.Module:
    """The architecture the description names, built from its kwargs (weights not loaded yet); our own
    architectures are in timm's registry since distill.models imports ``students``."""
    architecture = description["architecture"]
    try:
        check_model_name(architecture, role="exported")
    except ConfigError as error:
        raise ConfigError(f"{json_path}: {error}") from None
    try:
        return timm.create_model(architecture, **description["model_kwargs"])
    except Exception as error:  # a constructor refuses bad kwargs in many ways (TypeError, assert, ValueError)
        raise ConfigError(f"{json_path}: {architecture} cannot be built from its model_kwargs "
                          f"{description['model_kwargs']}: {quoted(error)}") from None


def read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path))
    except (SafetensorError, OSError) as error:
        raise unreadable_weights(path, error) from None
