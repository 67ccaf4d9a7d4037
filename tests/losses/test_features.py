"""Feature losses (FitNet hint, feature distance, AT, SP) by hand, their invariances, and zero on equal features."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from distill.errors import ConfigError
from distill.losses import (
    attention_transfer_loss,
    correlation_congruence_loss,
    feature_distance,
    hint_loss,
    pkt_loss,
    rkd_loss,
    similarity_preserving_loss,
)
from tests.losses.helpers import dot, unit


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


def test_zero_when_student_features_equal_teacher_features():
    features = torch.randn(6, 4, 3, 3)
    vectors = features.flatten(1)
    for value in (attention_transfer_loss(features, features), similarity_preserving_loss(features, features),
                  correlation_congruence_loss(vectors, vectors), rkd_loss(vectors, vectors), pkt_loss(vectors, vectors),
                  feature_distance(vectors, vectors, "cosine"), hint_loss(features, features)):
        assert value.item() == pytest.approx(0.0, abs=1e-5)
    assert F.mse_loss(vectors, vectors).item() == 0.0
