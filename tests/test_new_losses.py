"""DIST, logit standardisation, NST, KDSVD, FSP, VID, AB and OFD against independent computations (float64)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.testing import assert_close

from distill.errors import ConfigError
from distill.losses import (
    DistillBatch,
    ab_loss,
    activation_boundary_loss,
    build_loss_terms,
    dist_loss,
    dkd_loss,
    fsp_loss,
    kd_loss,
    kdsvd_loss,
    nst_loss,
    ofd_loss,
    ofd_margin,
    ofd_partial_l2,
    standardize_logits,
    vid_loss,
)
from distill.losses.vid import VIDHead

DOUBLE = torch.float64


def scalar(value: float) -> torch.Tensor:
    return torch.tensor(value, dtype=DOUBLE)


def randn(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=DOUBLE)


def softmax(values: list[float]) -> list[float]:
    exps = [math.exp(v) for v in values]
    return [e / sum(exps) for e in exps]


def mean(values: list[float]) -> float:
    return sum(values) / len(values)


def pearson(a: list[float], b: list[float], eps: float = 1e-8) -> float:
    ma, mb = mean(a), mean(b)
    cov = sum((x - ma) * (y - mb) for x, y in zip(a, b))
    norm_a = math.sqrt(sum((x - ma) ** 2 for x in a))
    norm_b = math.sqrt(sum((y - mb) ** 2 for y in b))
    return cov / (norm_a * norm_b + eps)


def hand_standardize(row: list[float]) -> list[float]:
    m = mean(row)
    std = math.sqrt(sum((x - m) ** 2 for x in row) / (len(row) - 1))  # Bessel's correction, as torch.std
    return [(x - m) / (std + 1e-7) for x in row]


def hand_kd(student: list[list[float]], teacher: list[list[float]], temperature: float) -> float:
    total = 0.0
    for s_row, t_row in zip(student, teacher):
        p_s, p_t = softmax([v / temperature for v in s_row]), softmax([v / temperature for v in t_row])
        total += sum(pt * math.log(pt / ps) for pt, ps in zip(p_t, p_s))
    return total / len(student) * temperature**2


STUDENT_LOGITS = [[1.0, 2.0, 0.5, -1.0], [0.0, -0.5, 2.5, 1.0], [3.0, 1.0, 0.0, 0.5]]
TEACHER_LOGITS = [[2.0, 3.5, -1.0, 0.0], [1.0, 0.0, 4.0, -2.0], [2.0, 2.5, -0.5, 1.0]]


# ---------------------------------------------------------------- DIST


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
    else:  # DKD by hand is checked in test_feature_losses; here: the same function on hand-standardised logits
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


# ---------------------------------------------------------------- NST


def hand_nst(student: torch.Tensor, teacher: torch.Tensor) -> float:
    def unit_rows(feature):  # per sample: one unit vector per channel, over positions
        return [[[x / math.sqrt(sum(v * v for v in ch)) for x in ch] for ch in sample]
                for sample in feature.flatten(2).tolist()]

    def kernel_mean(a, b):
        values = [sum(x * y for x, y in zip(u, v)) ** 2 for sa, sb in zip(a, b) for u in sa for v in sb]
        return mean(values)

    s, t = unit_rows(student), unit_rows(teacher)
    return kernel_mean(t, t) + kernel_mean(s, s) - 2 * kernel_mean(s, t)


def avg_pool_2x2(feature: torch.Tensor) -> torch.Tensor:
    """2x2 average pooling written out, for maps of even size."""
    return (feature[..., 0::2, 0::2] + feature[..., 1::2, 0::2] + feature[..., 0::2, 1::2]
            + feature[..., 1::2, 1::2]) / 4


def test_nst_matches_the_polynomial_mmd_by_loops():
    student, teacher = randn(2, 3, 2, 2, seed=1), randn(2, 5, 2, 2, seed=2)
    assert_close(nst_loss(student, teacher), scalar(hand_nst(student, teacher)))
    # The larger map is average-pooled to the smaller's size.
    large = randn(2, 3, 4, 4, seed=3)
    assert_close(nst_loss(large, teacher), scalar(hand_nst(avg_pool_2x2(large), teacher)))
    assert_close(nst_loss(teacher, teacher), scalar(0.0), atol=1e-12, rtol=0)
    # Channel normalisation: scaling one channel of the student changes nothing.
    scaled = student.clone()
    scaled[:, 1] *= 7.0
    assert_close(nst_loss(scaled, teacher), nst_loss(student, teacher))


# ---------------------------------------------------------------- FSP


def hand_fsp_matrix(bottom: torch.Tensor, top: torch.Tensor) -> list[list[list[float]]]:
    b, c1, h, w = bottom.shape
    return [[[sum(bottom[n, i, y, x].item() * top[n, j, y, x].item() for y in range(h) for x in range(w)) / (h * w)
              for j in range(top.shape[1])] for i in range(c1)] for n in range(b)]


def test_fsp_matches_gram_matrices_by_loops():
    students = [randn(2, 2, 4, 4, seed=4), randn(2, 3, 2, 2, seed=5), randn(2, 2, 2, 2, seed=6)]
    teachers = [randn(2, 2, 4, 4, seed=7), randn(2, 3, 2, 2, seed=8), randn(2, 2, 2, 2, seed=9)]
    expected = 0.0
    for index in range(2):
        bottom_s, bottom_t = students[index], teachers[index]
        if bottom_s.shape[-1] == 4:  # layer 0 is 4x4, layer 1 is 2x2: the bottom is pooled
            bottom_s, bottom_t = avg_pool_2x2(bottom_s), avg_pool_2x2(bottom_t)
        g_s = hand_fsp_matrix(bottom_s, students[index + 1])
        g_t = hand_fsp_matrix(bottom_t, teachers[index + 1])
        squares = [(a - c) ** 2 for ms, mt in zip(g_s, g_t) for rs, rt in zip(ms, mt) for a, c in zip(rs, rt)]
        expected += mean(squares)
    assert_close(fsp_loss(students, teachers), scalar(expected))


# ---------------------------------------------------------------- KDSVD


def reference_kdsvd(students, teachers, k=1) -> torch.Tensor:
    """RepDistiller's KDSVD transcribed (torch.svd, explicit loops for the alignment and the RBF)."""

    def svd(feature, n):
        x = feature.reshape(feature.shape[0], feature.shape[1], -1).transpose(-2, -1)
        _, s, v = torch.svd(x)
        return F.normalize(s[:, :n], dim=1), F.normalize(v[:, :, :n], dim=1)

    total, previous = 0.0, None
    for student, teacher in zip(students, teachers):
        s_t, v_t = svd(teacher, k)
        _, v_s = svd(student, k + 3)
        aligned = torch.zeros_like(v_t)
        for n in range(v_t.shape[0]):
            for m in range(k):
                cosines = [float(v_s[n, :, j] @ v_t[n, :, m]) for j in range(v_s.shape[2])]
                best = max(range(len(cosines)), key=lambda j: abs(cosines[j]))
                aligned[n, :, m] = math.copysign(1.0, cosines[best]) * v_s[n, :, best]
        v_s, v_t = aligned * s_t.unsqueeze(1), v_t * s_t.unsqueeze(1)
        if previous is not None:
            for n in range(v_s.shape[0]):
                for c in range(v_s.shape[1]):
                    for c_prev in range(previous[0].shape[1]):
                        for m in range(k):
                            rbf_s = math.exp(-((v_s[n, c, m] - previous[0][n, c_prev, m]).item() ** 2) / 8)
                            rbf_t = math.exp(-((v_t[n, c, m] - previous[1][n, c_prev, m]).item() ** 2) / 8)
                            total += (rbf_s - rbf_t) ** 2
        previous = (v_s, v_t)
    return scalar(total / students[0].shape[0])


@pytest.mark.parametrize("k", [1, 2])
def test_kdsvd_matches_a_transcription_of_the_reference(k):
    students = [randn(2, 3, 4, 4, seed=10), randn(2, 4, 3, 3, seed=11), randn(2, 5, 3, 3, seed=12)]
    teachers = [randn(2, 3, 2, 2, seed=13), randn(2, 4, 3, 3, seed=14), randn(2, 5, 3, 3, seed=15)]
    assert_close(kdsvd_loss(students, teachers, k), reference_kdsvd(students, teachers, k))
    assert_close(kdsvd_loss(teachers, teachers, k), scalar(0.0), atol=1e-12, rtol=0)


def test_kdsvd_gradients_are_finite():
    students = [randn(4, 8, 4, 4, seed=16).requires_grad_(), randn(4, 16, 2, 2, seed=17).requires_grad_()]
    teachers = [randn(4, 8, 4, 4, seed=18), randn(4, 16, 2, 2, seed=19)]
    kdsvd_loss(students, teachers).backward()
    assert all(torch.isfinite(s.grad).all() and s.grad.abs().sum() > 0 for s in students)


# ---------------------------------------------------------------- VID


def test_vid_is_the_gaussian_negative_log_likelihood_by_loops():
    mu, teacher = randn(2, 3, 2, 2, seed=20), randn(2, 3, 2, 2, seed=21)
    variance = torch.tensor([0.5, 2.0, 5.0], dtype=DOUBLE)
    values = [0.5 * ((mu[n, c, y, x].item() - teacher[n, c, y, x].item()) ** 2 / variance[c].item()
                     + math.log(variance[c].item()))
              for n in range(2) for c in range(3) for y in range(2) for x in range(2)]
    assert_close(vid_loss(mu, teacher, variance), scalar(mean(values)))


def test_vid_head_starts_at_the_initial_variance_and_pools_to_the_smaller_map():
    head = VIDHead(student_channels=2, teacher_channels=3, initial_variance=5.0).double()
    assert_close(head.variance(), torch.full((3,), 5.0, dtype=DOUBLE))
    assert [type(m).__name__ for m in head.regressor] == ["Conv2d", "ReLU", "Conv2d", "ReLU", "Conv2d"]
    student, teacher = randn(2, 2, 4, 4, seed=22), randn(2, 3, 2, 2, seed=23)
    expected = vid_loss(head.regressor(avg_pool_2x2(student)), teacher, torch.full((3,), 5.0, dtype=DOUBLE))
    assert_close(head(student, teacher), expected)


# ---------------------------------------------------------------- AB


def hand_ab_layer(student: torch.Tensor, teacher: torch.Tensor, margin: float) -> float:
    total = 0.0
    for s, t in zip(student.flatten().tolist(), teacher.flatten().tolist()):
        if s > -margin and t <= 0:
            total += (s + margin) ** 2
        if s <= margin and t > 0:
            total += (s - margin) ** 2
    return total / student.shape[0]


def test_activation_boundary_loss_by_loops_with_the_reference_layer_weights():
    students = [randn(2, 3, 2, 2, seed=24), randn(2, 4, 2, 2, seed=25), randn(2, 2, 1, 1, seed=26)]
    teachers = [randn(2, 3, 2, 2, seed=27), randn(2, 4, 2, 2, seed=28), randn(2, 2, 1, 1, seed=29)]
    for margin in (1.0, 0.5):
        assert_close(activation_boundary_loss(students[0], teachers[0], margin),
                     scalar(hand_ab_layer(students[0], teachers[0], margin)))
        layers = [hand_ab_layer(s, t, margin) for s, t in zip(students, teachers)]
        expected = (layers[0] / 4 + layers[1] / 2 + layers[2]) * 3 / 1000  # weights 2^(i - n + 1)
        assert_close(ab_loss(students, teachers, margin), scalar(expected))
    # A student beyond the margin on the teacher's side of every boundary costs nothing.
    teacher = randn(2, 3, 2, 2, seed=30)
    assert activation_boundary_loss(torch.where(teacher > 0, 1.5, -1.5), teacher).item() == 0.0


# ---------------------------------------------------------------- OFD


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


def test_ofd_reads_its_margins_from_the_teachers_batchnorm():
    from distill.models import create_model

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


# ---------------------------------------------------------------- configuration errors


def test_methods_that_compare_channels_name_the_layers_and_the_fix(make_cfg):
    from distill.train import prepare

    with pytest.raises(ConfigError, match=r"loss.kdsvd needs equal channel counts.*student '@-3' has 8, teacher "
                                          r"'@-3' has 32.*student=cifar_resnet8"):
        prepare(make_cfg("loss=kdsvd"))
    with pytest.raises(ConfigError, match=r"loss.fsp needs equal channel counts.*student '@0' has 32, teacher '@0' "
                                          r"has 16"):
        prepare(make_cfg("loss=fsp", "teacher=cifar_resnet20", "student=cifar_resnet8x4"))


def test_an_init_stage_term_needs_an_init_stage():
    with pytest.raises(ConfigError, match=r"loss.ab with hint_only_epochs=0 and main_stage=false is never trained"):
        build_loss_terms({"ab": {"weight": 1.0, "student_layers": ["a"], "teacher_layers": ["a"],
                                 "hint_only_epochs": 0}})
    with pytest.raises(ConfigError, match=r"loss.fsp needs as many student_layers as teacher_layers \(at least 2\)"):
        build_loss_terms({"fsp": {"weight": 1.0, "student_layers": ["a"], "teacher_layers": ["a"]}})
