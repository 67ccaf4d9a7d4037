"""Build any timm model (ours included) for a dataset, load weights safely, check it fits the data.

Every model goes through ``timm.create_model``; this module adds the checks that turn a typo or a
mismatched weights file into one clear message before training starts.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import timm
import torch
from torch import nn

import students  # noqa: F401  (registers our architectures into timm's registry)
from distill.config import to_dict
from distill.errors import ConfigError, close_matches
from distill.run_files import read_description, unreadable_weights, weights_path

# Prefixes of the state dicts our Lightning checkpoints hold: the trained network is ``student``.
CHECKPOINT_MODEL_PREFIX = "student."


def check_model_name(name: str, role: str = "model") -> None:
    if not timm.is_model(name):
        hint = close_matches(name, timm.list_models())
        raise ConfigError(
            f"unknown {role} model '{name}'"
            + (f"; did you mean: {hint}?" if hint else "")
            + " (any name from timm.list_models() works, plus ours: "
            + ", ".join(sorted(timm.list_models(module=["cifar_resnet", "mlp", "small_cnn"])))
            + ")"
        )


def create_model(
    name: str,
    num_classes: int,
    in_chans: int,
    kwargs: Mapping[str, Any] | None = None,
    pretrained: bool = False,
    role: str = "model",
) -> nn.Module:
    """``timm.create_model(name, num_classes=..., in_chans=..., **kwargs)`` after checking the name and channels."""
    check_model_name(name, role)
    kwargs = dict(kwargs or {})
    for key, data_value in (("in_chans", in_chans), ("num_classes", num_classes)):
        if key in kwargs and kwargs[key] != data_value:
            raise ConfigError(
                f"{role} '{name}' is configured with {key}={kwargs[key]} but the data has {key}={data_value}; "
                f"remove {role}.kwargs.{key} (it follows the data) or choose matching data"
            )
        kwargs[key] = data_value
    try:
        return timm.create_model(name, pretrained=pretrained, **kwargs)
    except TypeError as error:
        raise ConfigError(f"{role} '{name}' does not accept these arguments {kwargs}: {error}") from error


def check_input_fits(model: nn.Module, input_shape: tuple[int, ...], role: str, name: str) -> int:
    """Dry-run a forward pass on zeros of the data's shape; return the number of output classes."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            output = model(torch.zeros(2, *input_shape))
    except Exception as error:  # any failure here means the model cannot take this data
        raise ConfigError(
            f"{role} '{name}' cannot take inputs of shape {tuple(input_shape)} (channels x height x width) "
            f"from the data: {type(error).__name__}: {error}. Fix: choose a model for this input size, set "
            f"{role}.kwargs (e.g. img_size), or data.image_size"
        ) from error
    finally:
        model.train(was_training)
    if not isinstance(output, torch.Tensor) or output.ndim != 2:
        raise ConfigError(f"{role} '{name}' must return logits of shape (batch, classes), got {type(output)}")
    return output.shape[1]


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read weights from safetensors, a ``.pth`` state dict, or one of our Lightning checkpoints.

    An exported model's ``.json`` stands for the safetensors file it names. Never unpickles arbitrary
    objects: ``torch.load`` runs with ``weights_only=True`` (through timm's loader, which also strips
    ``module.``/``_orig_mod.`` wrapper prefixes).
    """
    path = Path(path).expanduser()
    if path.is_dir():
        raise ConfigError(f"weights file {path} is a folder; give the weights file itself (e.g. <run>/student.json)")
    if not path.is_file():
        raise ConfigError(f"weights file not found: {path}. Fix: check the path (absolute, or relative to the run)")
    if path.suffix == ".json":  # an exported model: the weights file it names lies beside it
        path = weights_path(path, read_description(path))
    try:
        state_dict = timm.models.load_state_dict(str(path), use_ema=False, weights_only=True)
    except Exception as error:  # unpickling errors span many lines: the refusal quotes them on one
        raise unreadable_weights(path, error, fix="give a .safetensors file, a PyTorch state dict (.pth/.pt) or "
                                 "a distill checkpoint (.ckpt), whole") from error
    if any(key.startswith(CHECKPOINT_MODEL_PREFIX) for key in state_dict):
        # A distill Lightning checkpoint: keep the trained network, drop adapters and the teacher.
        state_dict = {
            key[len(CHECKPOINT_MODEL_PREFIX):]: value
            for key, value in state_dict.items()
            if key.startswith(CHECKPOINT_MODEL_PREFIX)
        }
    return state_dict


def load_weights(model: nn.Module, path: str | Path, role: str = "model") -> None:
    """Load ``path`` into ``model`` strictly; a shape mismatch names the layer and the likely cause."""
    state_dict = read_state_dict(path)
    own = model.state_dict()
    mismatched = [key for key, value in state_dict.items() if key in own and own[key].shape != value.shape]
    if mismatched:
        details = "; ".join(
            f"{key}: file {tuple(state_dict[key].shape)} vs model {tuple(own[key].shape)}" for key in mismatched[:3]
        )
        classifier_weight = f"{classifier_name(model)}.weight"
        classes_hint = ""
        if classifier_weight in mismatched:
            file_classes, model_classes = state_dict[classifier_weight].shape[0], own[classifier_weight].shape[0]
            if file_classes != model_classes:
                classes_hint = (f" The classifier has {file_classes} outputs in the file and {model_classes} in the "
                                "model: the weights were trained for another number of classes.")
        raise ConfigError(
            f"weights in {path} do not fit {role} ({len(mismatched)} shape mismatches: {details}).{classes_hint} "
            "Fix: use weights for this architecture and dataset, or drop the weights to train the model here"
        )
    missing, unexpected = set(own) - set(state_dict), set(state_dict) - set(own)
    if missing or unexpected:
        raise ConfigError(
            f"weights in {path} are for another architecture than {role}: "
            f"missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]}"
        )
    model.load_state_dict(state_dict, strict=True)


def classifier_name(model: nn.Module) -> str | None:
    """Module path of a timm model's classifier (``fc``, ``head.fc``, ...), None if it has none."""
    get_classifier = getattr(model, "get_classifier", None)
    if get_classifier is None:
        return None
    classifier = get_classifier()
    return next((name for name, module in model.named_modules() if module is classifier and name), None)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def model_kwargs(model_cfg: Any, datamodule: Any) -> dict[str, Any]:
    """The kwargs that rebuild the model with ``timm.create_model`` (written beside exported weights)."""
    return {**to_dict(model_cfg.get("kwargs")), "num_classes": datamodule.num_classes,
            "in_chans": datamodule.in_chans}
