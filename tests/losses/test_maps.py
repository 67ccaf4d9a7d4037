"""Map losses (NST, FSP, KDSVD) against loops and a transcription of the reference, and their channel checks."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close

from distill.errors import ConfigError
from distill.losses import fsp_loss, kdsvd_loss, nst_loss
from distill.runner import prepare
from tests.losses.helpers import avg_pool_2x2, mean, randn, scalar

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


# ---------------------------------------------------------------- configuration errors


def test_methods_that_compare_channels_name_the_layers_and_the_fix(make_cfg):
    with pytest.raises(ConfigError, match=r"loss.kdsvd needs equal channel counts.*student '@-3' has 8, teacher "
                                          r"'@-3' has 32.*student=cifar_resnet8"):
        prepare(make_cfg("loss=kdsvd"))
    with pytest.raises(ConfigError, match=r"loss.fsp needs equal channel counts.*student '@0' has 32, teacher '@0' "
                                          r"has 16"):
        prepare(make_cfg("loss=fsp", "teacher=cifar_resnet20", "student=cifar_resnet8x4"))
