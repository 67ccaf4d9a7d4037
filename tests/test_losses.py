"""Loss terms against values computed by hand from their formulas."""

import math

import pytest
import torch

from distill.errors import ConfigError
from distill.losses import DistillBatch, build_loss_terms, kd_loss


def softmax(values: list[float]) -> list[float]:
    exps = [math.exp(v) for v in values]
    return [e / sum(exps) for e in exps]


def hand_kd(student: list[list[float]], teacher: list[list[float]], temperature: float) -> float:
    """KL(p_t || p_s) per row, summed over classes, averaged over rows, times T^2."""
    total = 0.0
    for s_row, t_row in zip(student, teacher):
        p_s = softmax([v / temperature for v in s_row])
        p_t = softmax([v / temperature for v in t_row])
        total += sum(pt * math.log(pt / ps) for pt, ps in zip(p_t, p_s))
    return total / len(student) * temperature**2


def test_kd_loss_matches_hand_computed_value():
    student = [[1.0, 2.0, 3.0], [0.5, -1.0, 2.0]]
    teacher = [[3.0, 2.0, 1.0], [0.0, 0.0, 4.0]]
    for temperature in (1.0, 2.0, 4.0):
        value = kd_loss(torch.tensor(student), torch.tensor(teacher), temperature)
        assert value.item() == pytest.approx(hand_kd(student, teacher, temperature), rel=1e-5)


def test_kd_loss_known_number():
    # T=2, one row: p_t = softmax([1.5, 1, .5]) and p_s is its mirror, so log(p_t/p_s) = (1, 0, -1) and
    # KL = p_t[0] - p_t[2] = (e^1.5 - e^0.5) / (e^1.5 + e + e^0.5) = 0.32016; times T^2 = 1.28063.
    value = kd_loss(torch.tensor([[1.0, 2.0, 3.0]]), torch.tensor([[3.0, 2.0, 1.0]]), 2.0)
    assert value.item() == pytest.approx(1.28063, abs=1e-4)


def test_kd_loss_is_zero_when_student_equals_teacher_and_positive_otherwise():
    logits = torch.randn(8, 10)
    assert kd_loss(logits, logits.clone(), 4.0).item() == pytest.approx(0.0, abs=1e-6)
    assert kd_loss(logits, torch.randn(8, 10), 4.0).item() > 0


def test_kd_gradient_reaches_student_not_teacher():
    student = torch.randn(4, 5, requires_grad=True)
    teacher = torch.randn(4, 5, requires_grad=True)
    kd_loss(student, teacher.detach(), 3.0).backward()
    assert student.grad is not None and student.grad.abs().sum() > 0
    assert teacher.grad is None


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


def test_non_positive_temperature_is_rejected():
    with pytest.raises(ConfigError, match="temperature must be > 0"):
        build_loss_terms({"kd": {"temperature": 0}})
