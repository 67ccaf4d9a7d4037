"""The final runs' statistics: the searched student's gain over the default one, with its interval."""

from __future__ import annotations

import pytest


def test_the_final_gain_interval_is_the_paired_t_interval():
    from distill.search.final import interval

    mean, low, high = interval([0.02, 0.03, 0.025])
    # By hand: mean 0.025, sample std 0.005, n 3, t(0.975, 2) = 4.3027: half-width 4.3027 * 0.005 / sqrt(3).
    assert mean == pytest.approx(0.025)
    assert (low, high) == pytest.approx((0.025 - 0.0124208, 0.025 + 0.0124208), abs=1e-6)
    assert interval([0.02]) is None
