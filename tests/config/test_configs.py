"""Every option of every config group composes, and the models and data it names can be built."""

from pathlib import Path

import pytest
from hydra.utils import instantiate

from distill.config import CONF_DIR

MODEL_GROUPS = ("student", "teacher")


def options(group: str) -> list[str]:
    return sorted(path.stem for path in (Path(CONF_DIR) / group).glob("*.yaml"))


@pytest.mark.parametrize("group", ["data", "loss", "optimizer", "scheduler", "trainer", "callbacks", "logger",
                                   *MODEL_GROUPS])
def test_every_option_composes(make_cfg, group):
    for option in options(group):
        extra = ["data.root=/tmp"] if (group, option) == ("data", "image_folder") else []
        cfg = make_cfg(f"{group}={option}", *extra, fast=False)
        assert cfg.get(group) is not None or option == "none"


@pytest.mark.parametrize("option", [o for o in options("student") if o != "timm"])
def test_every_student_preset_builds_for_digits(make_cfg, option):
    from distill.models import check_input_fits, create_model

    cfg = make_cfg(f"student={option}")
    data = instantiate(cfg.data)
    model = create_model(cfg.student.name, data.num_classes, data.in_chans, cfg.student.kwargs)
    assert check_input_fits(model, data.input_shape, "student", cfg.student.name) == 10
