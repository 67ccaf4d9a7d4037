"""The loss registry: terms built from a config by name, unknown names and options, missing required options."""

from __future__ import annotations

import math

import pytest
import torch

from distill.errors import ConfigError
from distill.losses import DistillBatch, build_loss_terms
from tests.losses.helpers import hand_kd, softmax


def test_terms_built_from_config_and_weighted_separately():
    terms = build_loss_terms({"ce": {"weight": 0.1}, "kd": {"weight": 0.9, "temperature": 2.0}})
    assert list(terms) == ["ce", "kd"]
    assert terms["ce"].weight == 0.1 and terms["kd"].weight == 0.9
    student = torch.tensor([[2.0, 0.0, -1.0]])
    teacher = torch.tensor([[0.0, 1.0, 0.0]])
    batch = DistillBatch(targets=torch.tensor([0]), student_logits=student, teacher_logits=teacher)
    expected_ce = -math.log(softmax([2.0, 0.0, -1.0])[0])
    assert terms["ce"](batch).item() == pytest.approx(expected_ce, rel=1e-6)
    assert terms["kd"](batch).item() == pytest.approx(hand_kd([[2.0, 0.0, -1.0]], [[0.0, 1.0, 0.0]], 2.0), rel=1e-5)


def test_unknown_loss_lists_the_available_ones():
    with pytest.raises(ConfigError, match=r"unknown loss 'kdd'.*did you mean kd.*"
                                          r"available: ab, at, cc, ce, crd, ctkd, dist, dkd, "):
        build_loss_terms({"kdd": {"weight": 1.0}})


def test_unknown_option_names_the_options():
    with pytest.raises(ConfigError, match=r"loss 'kd' has no option\(s\) \['temp'\].*temperature"):
        build_loss_terms({"kd": {"temp": 4}})


def test_missing_required_option_names_it():
    with pytest.raises(ConfigError, match=r"loss 'fitnet' needs option\(s\) \['student_layer', 'teacher_layer'\]"):
        build_loss_terms({"fitnet": {"weight": 100.0}})
    with pytest.raises(ConfigError, match="as many student_layers as teacher_layers"):
        build_loss_terms({"at": {"weight": 1.0, "student_layers": ["a", "b"], "teacher_layers": ["a"]}})
