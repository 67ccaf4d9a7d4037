"""VID: the Gaussian negative log-likelihood by loops and its regressor head."""

from __future__ import annotations

import math

import torch
from torch.testing import assert_close

from distill.losses import vid_loss
from distill.losses.vid import VIDHead
from tests.losses.helpers import DOUBLE, avg_pool_2x2, mean, randn, scalar


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
