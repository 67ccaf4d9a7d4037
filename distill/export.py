"""Export a trained model as safetensors + a JSON that names its timm architecture and kwargs.

The pair rebuilds the model with plain ``timm.create_model`` (after ``import students`` for our own
architectures), without this framework's Lightning classes or pickled objects. A pruned model's JSON
also lists its layer sizes (``layers``), which ``load_exported`` applies before loading the weights.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import timm
from safetensors.torch import load_file, save_file
from torch import nn

from distill.compress.structure import resize_layers
from distill.io import atomic_write, read_json, write_json


def export_model(model: nn.Module, architecture: str, model_kwargs: dict[str, Any], folder: str | Path,
                 stem: str = "student", extra: dict[str, Any] | None = None) -> Path:
    """Write ``<folder>/<stem>.safetensors`` and ``<folder>/<stem>.json``; return the JSON's path."""
    folder = Path(folder)
    weights_path = folder / f"{stem}.safetensors"
    state_dict = {key: value.detach().cpu().contiguous() for key, value in model.state_dict().items()}
    atomic_write(weights_path, lambda tmp: save_file(state_dict, str(tmp), metadata={"architecture": architecture}))
    description = {
        "architecture": architecture,
        "model_kwargs": model_kwargs,
        "weights": weights_path.name,
        "imports": ["students"],  # registers our architectures into timm before create_model
        **(extra or {}),
    }
    return write_json(folder / f"{stem}.json", description)


def load_exported(json_path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild an exported model (eval mode) and return it with its description."""
    json_path = Path(json_path)
    description = read_json(json_path)
    import students  # noqa: F401

    model = timm.create_model(description["architecture"], **description["model_kwargs"])
    state_dict = load_file(str(json_path.parent / description["weights"]))
    if "layers" in description:  # a pruned model: its layers are narrower than the architecture's
        resize_layers(model, description["layers"], state_dict)
    model.load_state_dict(state_dict, strict=True)
    return model.eval(), description
