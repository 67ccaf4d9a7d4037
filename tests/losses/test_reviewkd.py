"""ReviewKD: HCL by loops, ABF fusion as the reference writes it, the review chain and its warm-up."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.testing import assert_close

from distill.losses import DistillBatch, build_loss_terms, hcl_loss
from tests.losses.helpers import DOUBLE, mean, pooled, randn, scalar


def mse(a: list[float], b: list[float]) -> float:
    return mean([(x - y) ** 2 for x, y in zip(a, b)])


def test_hcl_by_loops():
    student8, teacher8 = randn(2, 2, 8, 8, seed=60), randn(2, 2, 8, 8, seed=61)
    student2, teacher2 = randn(2, 3, 2, 2, seed=62), randn(2, 3, 2, 2, seed=63)
    # 8x8: full, then 4, 2, 1 with weights 1/2, 1/4, 1/8; 2x2: full, then 1 with weight 1/2.
    level8 = (mse(pooled(student8, 8), pooled(teacher8, 8)) + mse(pooled(student8, 4), pooled(teacher8, 4)) / 2
              + mse(pooled(student8, 2), pooled(teacher8, 2)) / 4 + mse(pooled(student8, 1), pooled(teacher8, 1)) / 8
              ) / (1 + 1 / 2 + 1 / 4 + 1 / 8)
    level2 = (mse(pooled(student2, 2), pooled(teacher2, 2)) + mse(pooled(student2, 1), pooled(teacher2, 1)) / 2) / 1.5
    assert_close(hcl_loss([student8, student2], [teacher8, teacher2]), scalar(level8 + level2))


def test_review_chain_fuses_deep_to_shallow_and_warms_up():
    options = {"weight": 5.0, "student_layers": ["s1", "s2", "pre_logits"],
               "teacher_layers": ["t1", "t2", "pre_logits"], "warmup_epochs": 4}
    (term,) = build_loss_terms({"reviewkd": options}).values()
    students = {"s1": randn(2, 3, 4, 4, seed=64), "s2": randn(2, 5, 2, 2, seed=65), "pre_logits": randn(2, 5, seed=66)}
    teachers = {"t1": randn(2, 4, 8, 8, seed=67), "t2": randn(2, 6, 2, 2, seed=68), "pre_logits": randn(2, 6, seed=69)}
    term.build(students, teachers)
    term.double().eval()  # BatchNorm on running statistics, so the transcription below sees the same numbers
    deep, middle, shallow = term.abfs
    assert deep.att_conv is None and middle.att_conv is not None and shallow.att_conv is not None
    assert (deep.conv1[0].in_channels, deep.conv1[0].out_channels, deep.conv2[0].out_channels) == (5, 5, 6)
    assert (shallow.conv1[0].in_channels, shallow.conv2[0].out_channels) == (3, 4)

    def abf(module, x, residual, out_size):  # mdistiller's ABF.forward, written out
        x = module.conv1(x)
        if residual is not None:
            residual = F.interpolate(residual, x.shape[-2:], mode="nearest")
            z = module.att_conv(torch.cat([x, residual], dim=1))
            x = x * z[:, 0].view(2, 1, *x.shape[-2:]) + residual * z[:, 1].view(2, 1, *x.shape[-2:])
        out = F.interpolate(x, out_size, mode="nearest") if x.shape[-1] != out_size[-1] else x
        return module.conv2(out), x

    out_deep, residual = abf(deep, students["pre_logits"].view(2, 5, 1, 1), None, (1, 1))
    out_middle, residual = abf(middle, students["s2"], residual, (2, 2))
    out_shallow, _ = abf(shallow, students["s1"], residual, (8, 8))
    expected = hcl_loss([out_shallow, out_middle, out_deep],
                        [teachers["t1"], teachers["t2"], teachers["pre_logits"].view(2, 6, 1, 1)])
    for epoch, ramp in ((0, 0.25), (1, 0.5), (7, 1.0)):
        batch = DistillBatch(torch.tensor([0, 1]), torch.zeros(2, 3, dtype=DOUBLE), None, students, teachers,
                             epoch=epoch)
        assert_close(term(batch), ramp * expected)
