"""OFD: the margin from the teacher's BatchNorm, the partial L2 by loops, and its pre-activation layer checks."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.testing import assert_close

from distill.errors import ConfigError
from distill.losses import build_loss_terms, ofd_loss, ofd_margin, ofd_partial_l2
from distill.losses.maps import pool_to
from distill.models import create_model
from tests.losses.helpers import DOUBLE, avg_pool_2x2, randn, scalar


def normal_cdf(x: float) -> float:
    return 0.5 * (1 + math.erf(x / math.sqrt(2)))


def test_ofd_margin_is_the_expected_negative_part_of_the_bn_gaussian():
    gamma = torch.tensor([1.0, -2.0, 0.5, 0.1], dtype=DOUBLE)
    beta = torch.tensor([0.0, 1.0, -0.3, 1.0], dtype=DOUBLE)  # the last: Phi(-10) < 0.001, so -3 s
    expected = []
    for g, b in zip(gamma.tolist(), beta.tolist()):
        s = abs(g)
        below = normal_cdf(-b / s)
        density = math.exp(-((b / s) ** 2) / 2) / math.sqrt(2 * math.pi)
        expected.append(-s * density / below + b if below > 0.001 else -3 * s)
    assert_close(ofd_margin(gamma, beta), torch.tensor(expected, dtype=torch.float32))
    # Monte Carlo check of the formula for one channel: the mean of N(1, 2^2) below zero.
    samples = torch.randn(2_000_000, generator=torch.Generator().manual_seed(0), dtype=DOUBLE) * 2.0 + 1.0
    assert abs(samples[samples < 0].mean().item() - expected[1]) < 0.01


def hand_partial_l2(student: torch.Tensor, teacher: torch.Tensor, margin: list[float]) -> float:
    total = 0.0
    for n in range(student.shape[0]):
        for c in range(student.shape[1]):
            m = margin[c]
            for s, t in zip(student[n, c].flatten().tolist(), teacher[n, c].flatten().tolist()):
                if s > m and t <= m:
                    total += (s - m) ** 2
                if s > t and m < t <= 0:
                    total += (s - t) ** 2
                if t > 0:
                    total += (s - t) ** 2
    return total / student.shape[0]


def test_ofd_partial_l2_and_layer_weights_by_loops():
    margin = torch.tensor([-0.8, -0.2, -1.5])
    students = [randn(2, 3, 2, 2, seed=31), randn(2, 3, 1, 1, seed=32)]
    teachers = [randn(2, 3, 4, 4, seed=33), randn(2, 3, 1, 1, seed=34)]
    assert_close(ofd_partial_l2(students[1], teachers[1], margin),
                 scalar(hand_partial_l2(students[1], teachers[1], margin.tolist())))
    # The teacher's map is pooled to the student's size; the shallower layer weighs 1/2.
    expected = (hand_partial_l2(students[0], avg_pool_2x2(teachers[0]), margin.tolist()) / 2
                + hand_partial_l2(students[1], teachers[1], margin.tolist()))
    assert_close(ofd_loss(students, teachers, [margin, margin]), scalar(expected))


def test_ofd_skips_only_a_pool_that_would_be_the_identity():
    teacher = randn(4, 8, 7, 7, seed=35)
    assert pool_to(teacher, (7, 7)) is teacher
    assert torch.equal(F.adaptive_avg_pool2d(teacher, (7, 7)), teacher)  # what the skipped pool would have given
    assert_close(pool_to(teacher, (1, 1)), teacher.mean(dim=(2, 3), keepdim=True))


def test_ofd_reads_its_margins_from_the_teachers_batchnorm():
    teacher = create_model("cifar_resnet20", 10, 1)
    bn = teacher.layer2[-1].bn2
    with torch.no_grad():
        bn.weight.uniform_(0.5, 2.0)
        bn.bias.uniform_(-1.0, 1.0)
    (term,) = build_loss_terms({"ofd": {"weight": 1.0, "student_layers": ["@-2:pre_act"],
                                        "teacher_layers": ["@-2:pre_act"]}}).values()
    term.attach(None, teacher)
    assert_close(term.margins()[0], ofd_margin(bn.weight.detach(), bn.bias.detach()))
    assert "margin0" not in term.state_dict()  # derived from the teacher, which is not checkpointed


def test_ofd_needs_a_pre_act_teacher_layer_with_batchnorm():
    plain = nn.Sequential(nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU()))
    (term,) = build_loss_terms({"ofd": {"weight": 1.0, "student_layers": ["0:pre_act"],
                                        "teacher_layers": ["0:pre_act"]}}).values()
    with pytest.raises(ConfigError, match=r"teacher layer '0:pre_act' has no \(affine\) BatchNorm"):
        term.attach(None, plain)
    (term,) = build_loss_terms({"ofd": {"weight": 1.0, "student_layers": ["0"], "teacher_layers": ["0"]}}).values()
    with pytest.raises(ConfigError, match=r"pre-ReLU features, but teacher layer '0'.*use '0:pre_act'"):
        term.attach(None, plain)
