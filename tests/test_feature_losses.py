"""Feature and relation losses against independent hand computations, plus their invariances and gradients."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from distill.errors import ConfigError
from distill.losses import (
    DistillBatch,
    attention_transfer_loss,
    build_loss_terms,
    correlation_congruence_loss,
    dkd_loss,
    feature_distance,
    hint_loss,
    pkt_loss,
    rkd_loss,
    similarity_preserving_loss,
)

torch.manual_seed(0)
STUDENT_VECTORS = torch.randn(4, 3, dtype=torch.float64)
TEACHER_VECTORS = torch.randn(4, 5, dtype=torch.float64)


def dot(a, b):
    return sum(x * y for x, y in zip(a, b))


def unit(v):
    norm = math.sqrt(dot(v, v))
    return [x / norm for x in v]


def huber(a, b):
    d = abs(a - b)
    return 0.5 * d * d if d < 1 else d - 0.5


def test_hint_and_feature_distance_reductions():
    s = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    t = torch.tensor([[0.0, 0.0], [1.0, 6.0]])
    # squared differences 1, 4, 4, 4 -> mean 13/4; absolute 1, 2, 2, 2 -> mean 7/4
    assert hint_loss(s, t).item() == pytest.approx(13 / 4)
    assert feature_distance(s, t, "l2").item() == pytest.approx(13 / 4)
    assert feature_distance(s, t, "l1").item() == pytest.approx(7 / 4)
    assert feature_distance(s, t, "smooth_l1").item() == pytest.approx((0.5 + 1.5 + 1.5 + 1.5) / 4)
    cosines = [0.0, dot([3, 4], [1, 6]) / (5 * math.sqrt(37))]  # against a zero vector: 0 (torch's eps)
    assert feature_distance(s, t, "cosine").item() == pytest.approx(sum(1 - c for c in cosines) / 2, rel=1e-6)
    with pytest.raises(ConfigError, match="unknown feature distance metric 'l3'"):
        feature_distance(s, t, "l3")


def test_attention_transfer_by_hand_and_scale_invariance():
    s = torch.tensor([[[[1.0, 2.0], [0.0, 1.0]], [[1.0, 0.0], [2.0, 1.0]]]])  # 1 x 2 x 2 x 2
    t = torch.tensor([[[[0.0, 1.0], [1.0, 0.0]]]])  # 1 x 1 x 2 x 2 (channels may differ)
    a_s = unit([(1 + 1) / 2, (4 + 0) / 2, (0 + 4) / 2, (1 + 1) / 2])
    a_t = unit([0.0, 1.0, 1.0, 0.0])
    expected = sum((x - y) ** 2 for x, y in zip(a_s, a_t)) / 4
    assert attention_transfer_loss(s, t).item() == pytest.approx(expected, rel=1e-6)
    assert attention_transfer_loss(3.0 * s, t).item() == pytest.approx(expected, rel=1e-6)
    assert attention_transfer_loss(t, t).item() == pytest.approx(0.0, abs=1e-12)


def test_similarity_preserving_by_hand_and_scale_invariance():
    s = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    t = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    g_s = [unit([1.0, 1.0]), unit([1.0, 2.0])]
    g_t = [unit([4.0, 0.0]), unit([0.0, 1.0])]
    expected = sum((a - b) ** 2 for row_s, row_t in zip(g_s, g_t) for a, b in zip(row_s, row_t)) / 4
    assert similarity_preserving_loss(s, t).item() == pytest.approx(expected, rel=1e-6)
    assert similarity_preserving_loss(5.0 * s, t).item() == pytest.approx(expected, rel=1e-6)
    assert similarity_preserving_loss(t, t).item() == pytest.approx(0.0, abs=1e-12)


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


def test_missing_required_option_names_it():
    with pytest.raises(ConfigError, match=r"loss 'fitnet' needs option\(s\) \['student_layer', 'teacher_layer'\]"):
        build_loss_terms({"fitnet": {"weight": 100.0}})
    with pytest.raises(ConfigError, match="as many student_layers as teacher_layers"):
        build_loss_terms({"at": {"weight": 1.0, "student_layers": ["a", "b"], "teacher_layers": ["a"]}})


def test_zero_when_student_features_equal_teacher_features():
    features = torch.randn(6, 4, 3, 3)
    vectors = features.flatten(1)
    for value in (attention_transfer_loss(features, features), similarity_preserving_loss(features, features),
                  correlation_congruence_loss(vectors, vectors), rkd_loss(vectors, vectors), pkt_loss(vectors, vectors),
                  feature_distance(vectors, vectors, "cosine"), hint_loss(features, features)):
        assert value.item() == pytest.approx(0.0, abs=1e-5)
    assert F.mse_loss(vectors, vectors).item() == 0.0
