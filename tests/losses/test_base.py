"""Shared loss-term machinery: a term that trains only in an initialisation stage needs one."""

from __future__ import annotations

import pytest

from distill.errors import ConfigError
from distill.losses import build_loss_terms


def test_an_init_stage_term_needs_an_init_stage():
    with pytest.raises(ConfigError, match=r"loss.ab with hint_only_epochs=0 and main_stage=false is never trained"):
        build_loss_terms({"ab": {"weight": 1.0, "student_layers": ["a"], "teacher_layers": ["a"],
                                 "hint_only_epochs": 0}})
    with pytest.raises(ConfigError, match=r"loss.fsp needs as many student_layers as teacher_layers \(at least 2\)"):
        build_loss_terms({"fsp": {"weight": 1.0, "student_layers": ["a"], "teacher_layers": ["a"]}})
