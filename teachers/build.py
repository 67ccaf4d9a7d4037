"""Build a teacher network and load its weights from the source the config names."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import nn

from distill.errors import ConfigError
from distill.models import check_input_fits, create_model, load_weights
from teachers.hub import check_pretrained_available


class TeacherSource(enum.Enum):
    WEIGHTS_FILE = "weights file"  # teacher.weights: safetensors / .pth / distill .ckpt / exported .json
    HUB = "timm pretrained hub"  # teacher.pretrained: true, used as is or fine-tuned (teacher.train)
    TRAIN = "trained here"  # no weights: trained on the run's data, cached by config


def teacher_source(teacher_cfg: Mapping[str, Any]) -> TeacherSource:
    if teacher_cfg.get("weights"):
        return TeacherSource.WEIGHTS_FILE
    if teacher_cfg.get("pretrained"):
        return TeacherSource.HUB
    return TeacherSource.TRAIN


def build_teacher(teacher_cfg: Mapping[str, Any], num_classes: int, in_chans: int,
                  input_shape: tuple[int, ...]) -> nn.Module:
    """The teacher network with the configured weights loaded (random init when it is to be trained here)."""
    name = teacher_cfg["name"]
    source = teacher_source(teacher_cfg)
    if source is TeacherSource.HUB:
        check_pretrained_available(name)
    try:
        model = create_model(name, num_classes, in_chans, teacher_cfg.get("kwargs"),
                             pretrained=source is TeacherSource.HUB, role="teacher")
    except ConfigError:
        raise
    except Exception as error:
        if source is not TeacherSource.HUB:
            raise
        # The hub is unreachable, or has no weights for this name.
        raise ConfigError(
            f"could not get pretrained weights for teacher '{name}' from timm's hub: {type(error).__name__}: "
            f"{error}. Fix: run with network access once (weights are cached), or give a local file with "
            "teacher.weights=/path/to/weights.safetensors and teacher.pretrained=false"
        ) from error
    if source is TeacherSource.WEIGHTS_FILE:
        path = Path(str(teacher_cfg["weights"])).expanduser()
        load_weights(model, path, role=f"teacher '{name}'")
    check_input_fits(model, input_shape, "teacher", name)
    return model
