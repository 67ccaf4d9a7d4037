"""Logit losses (CE, KD, DKD, DIST) and logit standardisation against hand computations from their formulas."""

from __future__ import annotations

import math

import pytest
import torch
from torch.testing import assert_close

from distill.errors import ConfigError
from distill.losses import DistillBatch, build_loss_terms, dist_loss, dkd_loss, kd_loss, standardize_logits
from tests.losses.helpers import DOUBLE, STUDENT_LOGITS, TEACHER_LOGITS, hand_kd, mean, scalar, softmax

# ---------------------------------------------------------------- KD


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


def test_non_positive_temperature_is_rejected():
    with pytest.raises(ConfigError, match="temperature must be > 0"):
        build_loss_terms({"kd": {"temperature": 0}})


# ---------------------------------------------------------------- DKD


def test_dkd_by_hand():
    student = torch.tensor([[2.0, 1.0, 0.0], [0.0, 0.5, 1.5]], dtype=torch.float64)
    teacher = torch.tensor([[3.0, 0.0, 1.0], [1.0, 1.0, 2.0]], dtype=torch.float64)
    targets = torch.tensor([0, 2])
    temperature, alpha, beta = 2.0, 1.0, 8.0

    def softmax(values):
        exps = [math.exp(v / temperature) for v in values]
        return [e / sum(exps) for e in exps]

    tckd = nckd = 0.0
    for s_row, t_row, y in zip(student.tolist(), teacher.tolist(), targets.tolist()):
        p_s, p_t = softmax(s_row), softmax(t_row)
        b_s, b_t = [p_s[y], 1 - p_s[y]], [p_t[y], 1 - p_t[y]]
        tckd += sum(bt * math.log(bt / bs) for bt, bs in zip(b_t, b_s))
        rest = [c for c in range(3) if c != y]
        q_s, q_t = softmax([s_row[c] for c in rest]), softmax([t_row[c] for c in rest])
        nckd += sum(qt * math.log(qt / qs) for qt, qs in zip(q_t, q_s))
    expected = (alpha * tckd + beta * nckd) / 2 * temperature**2
    value = dkd_loss(student, teacher, targets, alpha, beta, temperature)
    assert value.item() == pytest.approx(expected, rel=1e-6)
    assert dkd_loss(teacher, teacher, targets, alpha, beta, temperature).item() == pytest.approx(0.0, abs=1e-9)


def test_dkd_warmup_ramps_linearly():
    (term,) = build_loss_terms({"dkd": {"warmup_epochs": 4, "temperature": 2.0}}).values()
    student, teacher = torch.randn(3, 5), torch.randn(3, 5)
    full = dkd_loss(student, teacher, torch.tensor([0, 1, 2]), 1.0, 8.0, 2.0).item()
    for epoch, scale in ((0, 0.25), (1, 0.5), (3, 1.0), (10, 1.0)):
        batch = DistillBatch(torch.tensor([0, 1, 2]), student, teacher, epoch=epoch)
        assert term(batch).item() == pytest.approx(scale * full, rel=1e-6)


# ---------------------------------------------------------------- DIST


def pearson(a: list[float], b: list[float], eps: float = 1e-8) -> float:
    ma, mb = mean(a), mean(b)
    cov = sum((x - ma) * (y - mb) for x, y in zip(a, b))
    norm_a = math.sqrt(sum((x - ma) ** 2 for x in a))
    norm_b = math.sqrt(sum((y - mb) ** 2 for y in b))
    return cov / (norm_a * norm_b + eps)


def hand_dist(student, teacher, temperature, beta, gamma) -> float:
    y_s = [softmax([v / temperature for v in row]) for row in student]
    y_t = [softmax([v / temperature for v in row]) for row in teacher]
    inter = 1 - mean([pearson(a, b) for a, b in zip(y_s, y_t)])
    columns = range(len(y_s[0]))
    intra = 1 - mean([pearson([row[c] for row in y_s], [row[c] for row in y_t]) for c in columns])
    return temperature**2 * (beta * inter + gamma * intra)


@pytest.mark.parametrize(("temperature", "beta", "gamma"), [(4.0, 1.0, 1.0), (1.0, 2.0, 0.5), (2.0, 0.0, 1.0)])
def test_dist_matches_pearson_correlations_by_hand(temperature, beta, gamma):
    value = dist_loss(torch.tensor(STUDENT_LOGITS, dtype=DOUBLE), torch.tensor(TEACHER_LOGITS, dtype=DOUBLE),
                      temperature, beta, gamma)
    assert_close(value, scalar(hand_dist(STUDENT_LOGITS, TEACHER_LOGITS, temperature, beta, gamma)))


def test_dist_vanishes_for_equal_probabilities_up_to_the_reference_eps():
    logits = torch.tensor(STUDENT_LOGITS, dtype=DOUBLE)
    # eps = 1e-8 is added to the product of norms (as in the reference), so "zero" is ~1e-8 / ||p - mean||^2.
    assert_close(dist_loss(logits, logits, temperature=1.0), scalar(0.0), atol=1e-6, rtol=0)
    # A constant shift of the logits does not change the probabilities.
    assert_close(dist_loss(logits + 3.0, logits, temperature=1.0), scalar(0.0), atol=1e-6, rtol=0)
    assert dist_loss(logits, torch.tensor(TEACHER_LOGITS, dtype=DOUBLE), temperature=1.0) > 0.1


def test_dist_term_from_the_preset_options():
    (term,) = build_loss_terms({"dist": {"weight": 2.0, "temperature": 4.0, "beta": 1.0, "gamma": 1.0}}).values()
    batch = DistillBatch(torch.tensor([0, 2, 1]), torch.tensor(STUDENT_LOGITS, dtype=DOUBLE),
                         torch.tensor(TEACHER_LOGITS, dtype=DOUBLE))
    assert term.weight == 2.0
    assert_close(term(batch), scalar(hand_dist(STUDENT_LOGITS, TEACHER_LOGITS, 4.0, 1.0, 1.0)))


# ---------------------------------------------------------------- logit standardisation


def hand_standardize(row: list[float]) -> list[float]:
    m = mean(row)
    std = math.sqrt(sum((x - m) ** 2 for x in row) / (len(row) - 1))  # Bessel's correction, as torch.std
    return [(x - m) / (std + 1e-7) for x in row]


def test_standardize_logits_is_a_per_sample_z_score():
    expected = torch.tensor([hand_standardize(row) for row in STUDENT_LOGITS], dtype=DOUBLE)
    assert_close(standardize_logits(torch.tensor(STUDENT_LOGITS, dtype=DOUBLE)), expected)


@pytest.mark.parametrize("name", ["kd", "dkd", "dist"])
def test_standardize_option_z_scores_both_logits_before_the_temperature(name):
    student, teacher = torch.tensor(STUDENT_LOGITS, dtype=DOUBLE), torch.tensor(TEACHER_LOGITS, dtype=DOUBLE)
    targets = torch.tensor([1, 2, 0])
    (term,) = build_loss_terms({name: {"temperature": 2.0, "standardize": True}}).values()
    if name == "dkd":
        term.warmup_epochs = 0
    value = term(DistillBatch(targets, student, teacher))
    z_s = [hand_standardize(row) for row in STUDENT_LOGITS]
    z_t = [hand_standardize(row) for row in TEACHER_LOGITS]
    if name == "kd":
        expected = scalar(hand_kd(z_s, z_t, 2.0))
    elif name == "dist":
        expected = scalar(hand_dist(z_s, z_t, 2.0, 1.0, 1.0))
    else:  # DKD by hand is checked in test_dkd_by_hand; here: the same function on hand-standardised logits
        expected = dkd_loss(torch.tensor(z_s, dtype=DOUBLE), torch.tensor(z_t, dtype=DOUBLE), targets, 1.0, 8.0, 2.0)
    assert_close(value, expected)
    # Standardised, each network may use its own logit scale and offset: the loss does not change.
    rescaled = term(DistillBatch(targets, 3.0 * student + 5.0, 0.5 * teacher - 1.0))
    assert_close(rescaled, value, rtol=1e-6, atol=1e-9)
    assert not torch.allclose(kd_loss(3.0 * student + 5.0, teacher, 2.0), kd_loss(student, teacher, 2.0))


def test_standardize_is_off_by_default():
    for name in ("kd", "dkd", "dist"):
        (term,) = build_loss_terms({name: {}}).values()
        assert term.standardize is False
