"""Relation losses (CC, RKD, PKT) against loops over every pair or triple of samples."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from distill.losses import correlation_congruence_loss, pkt_loss, rkd_loss
from tests.losses.helpers import dot, unit

torch.manual_seed(0)
STUDENT_VECTORS = torch.randn(4, 3, dtype=torch.float64)
TEACHER_VECTORS = torch.randn(4, 5, dtype=torch.float64)


def huber(a, b):
    d = abs(a - b)
    return 0.5 * d * d if d < 1 else d - 0.5


def test_correlation_congruence_matches_the_exact_kernel_expansion():
    gamma, order = 0.4, 2

    def correlation(features):
        rows = [unit(f.tolist()) for f in features]
        return [[math.exp(-2 * gamma) * sum((2 * gamma * dot(a, b)) ** p / math.factorial(p) for p in range(order + 1))
                 for b in rows] for a in rows]

    c_s, c_t = correlation(STUDENT_VECTORS), correlation(TEACHER_VECTORS)
    expected = sum((c_s[i][j] - c_t[i][j]) ** 2 for i in range(4) for j in range(4)) / 16
    value = correlation_congruence_loss(STUDENT_VECTORS, TEACHER_VECTORS, gamma, order)
    assert value.item() == pytest.approx(expected, rel=1e-9)
    # With a high order the expansion is the Gaussian kernel itself: exp(-gamma ||x - y||^2) of unit vectors.
    rows = [unit(f.tolist()) for f in STUDENT_VECTORS]
    exact = [[math.exp(-gamma * sum((x - y) ** 2 for x, y in zip(a, b))) for b in rows] for a in rows]
    from distill.losses.relations import rbf_correlation

    assert torch.allclose(rbf_correlation(STUDENT_VECTORS, gamma, 12), torch.tensor(exact, dtype=torch.float64))


def test_rkd_distance_and_angle_by_loops():
    def psi_d(features):
        rows = features.tolist()
        d = [[math.dist(a, b) for b in rows] for a in rows]
        mean = sum(d[i][j] for i in range(4) for j in range(4) if i != j) / 12
        return [x / mean for row in d for x in row]

    def psi_a(features):
        rows = features.tolist()
        values = []
        for j, i, k in itertools.product(range(4), repeat=3):
            e_ij = [a - b for a, b in zip(rows[i], rows[j])]
            e_kj = [a - b for a, b in zip(rows[k], rows[j])]
            values.append(dot(unit(e_ij), unit(e_kj)) if i != j and k != j else 0.0)
        return values

    distance = sum(huber(a, b) for a, b in zip(psi_d(STUDENT_VECTORS), psi_d(TEACHER_VECTORS))) / 16
    angle = sum(huber(a, b) for a, b in zip(psi_a(STUDENT_VECTORS), psi_a(TEACHER_VECTORS))) / 64
    value = rkd_loss(STUDENT_VECTORS, TEACHER_VECTORS, distance_weight=25.0, angle_weight=50.0)
    assert value.item() == pytest.approx(25 * distance + 50 * angle, rel=1e-6)
    assert rkd_loss(TEACHER_VECTORS, TEACHER_VECTORS).item() == pytest.approx(0.0, abs=1e-9)
    # Relations do not change when the embedding is scaled.
    assert rkd_loss(7 * STUDENT_VECTORS, TEACHER_VECTORS).item() == pytest.approx(value.item(), rel=1e-6)


def test_pkt_by_loops():
    def conditional(features):
        rows = [unit(f.tolist()) for f in features]
        kernel = [[(dot(a, b) + 1) / 2 for b in rows] for a in rows]
        return [[k / sum(row) for k in row] for row in kernel]

    p, q = conditional(STUDENT_VECTORS), conditional(TEACHER_VECTORS)
    eps = 1e-7
    expected = sum(q[i][j] * math.log((q[i][j] + eps) / (p[i][j] + eps)) for i in range(4) for j in range(4)) / 16
    assert pkt_loss(STUDENT_VECTORS, TEACHER_VECTORS).item() == pytest.approx(expected, rel=1e-6)
    assert pkt_loss(TEACHER_VECTORS, TEACHER_VECTORS).item() == pytest.approx(0.0, abs=1e-9)
