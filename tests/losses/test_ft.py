"""FT: the factor-transfer loss by loops, and the paraphraser's stage before the translator's."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.testing import assert_close

from distill.losses import build_loss_terms
from tests.losses.helpers import randn, scalar


def test_factor_transfer_loss_by_loops():
    from distill.losses import factor_transfer_loss

    student, teacher = randn(2, 3, 2, 2, seed=50), randn(2, 4, 2, 2, seed=51)

    def factor(feature):
        rows = [[sum(feature[n, c, y, x].item() ** 2 for c in range(feature.shape[1])) / feature.shape[1]
                 for y in range(2) for x in range(2)] for n in range(2)]
        return [[v / math.sqrt(sum(u * u for u in row)) for v in row] for row in rows]

    f_s, f_t = factor(student), factor(teacher)
    expected = sum(abs(a - b) for rs, rt in zip(f_s, f_t) for a, b in zip(rs, rt)) / 8
    assert_close(factor_transfer_loss(student, teacher), scalar(expected))


def test_ft_trains_the_paraphraser_alone_then_the_translator_on_frozen_factors():
    from distill.losses import DistillBatch

    (term,) = build_loss_terms({"ft": {"hint_only_epochs": 2}}).values()
    term.build({"@-1": torch.zeros(2, 3, 2, 2)}, {"@-1": torch.zeros(2, 8, 2, 2)})
    term.double()
    encoder = [m for m in term.paraphraser.encoder if isinstance(m, nn.Conv2d)]
    assert [(m.in_channels, m.out_channels) for m in encoder] == [(8, 8), (8, 4), (4, 4)]
    assert [type(m).__name__ for m in term.translator][:3] == ["Conv2d", "BatchNorm2d", "LeakyReLU"]
    student = randn(2, 3, 2, 2, seed=52).requires_grad_()
    teacher = randn(2, 8, 2, 2, seed=53)
    batch = DistillBatch(torch.tensor([0, 1]), torch.zeros(2, 3), torch.zeros(2, 3), {"@-1": student},
                         {"@-1": teacher}, epoch=1)
    value = term(batch)
    assert_close(value, 0.2 / 200 * F.mse_loss(term.paraphraser(teacher), teacher))
    value.backward()
    assert student.grad is None and all(p.grad is not None for p in term.paraphraser.parameters())
    term.zero_grad(set_to_none=True)
    batch.epoch = 2
    value = term(batch)
    assert_close(value, factor_transfer_loss_of(term, student, teacher))
    value.backward()
    assert student.grad.abs().sum() > 0 and all(p.grad is None for p in term.paraphraser.parameters())


def factor_transfer_loss_of(term, student, teacher):
    from distill.losses import factor_transfer_loss

    return factor_transfer_loss(term.translator(student), term.paraphraser.encoder(teacher).detach())
