"""CTKD: the learned global temperature and its cosine lambda; instance-wise, per-sample KD by loops, the MLP's
temperature by hand, the reversed gradient, a run."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.testing import assert_close

from distill.errors import ConfigError
from distill.losses import DistillBatch, build_loss_terms
from distill.losses.ctkd import instance_kd_loss
from distill.runner import run
from tests.losses.helpers import DOUBLE, STUDENT_LOGITS, TEACHER_LOGITS, hand_kd, mean, scalar

# ---------------------------------------------------------------- global temperature


def test_ctkd_lambda_follows_half_a_cosine_from_0_to_minus_1():
    from distill.losses.ctkd import cosine_lambda

    for epoch, expected in ((0, 0.0), (1, -(1 - math.cos(math.pi / 10)) / 2), (5, -0.5), (10, -1.0), (30, -1.0)):
        assert cosine_lambda(epoch, 10) == pytest.approx(expected)


def test_ctkd_is_kd_at_the_learned_temperature_and_the_temperature_ascends_the_loss():
    (term,) = build_loss_terms({"ctkd": {}}).values()
    term.double()
    student, teacher = torch.tensor(STUDENT_LOGITS, dtype=DOUBLE), torch.tensor(TEACHER_LOGITS, dtype=DOUBLE)
    temperature = 1 + 20 / (1 + math.exp(-1.0))  # theta starts at 1
    batch = DistillBatch(torch.tensor([0, 1, 2]), student, teacher, epoch=4)  # 1-based epoch 5: lambda = -0.5
    value = term(batch)
    assert_close(value, scalar(hand_kd(STUDENT_LOGITS, TEACHER_LOGITS, temperature)))
    value.backward()
    # Without the reversal: d loss / d theta by central differences of the hand computation, then times lambda.
    h = 1e-6

    def loss_at(theta: float) -> float:
        return hand_kd(STUDENT_LOGITS, TEACHER_LOGITS, 1 + 20 / (1 + math.exp(-theta)))

    plain = (loss_at(1 + h) - loss_at(1 - h)) / (2 * h)
    assert_close(term.theta.grad, scalar(-0.5 * plain), rtol=1e-5, atol=1e-8)
    assert "theta" in dict(term.named_parameters())


# ---------------------------------------------------------------- instance-wise temperature


# A fixed two-layer MLP on [teacher logits, student logits] (8 inputs), 2 hidden units.
HIDDEN_WEIGHT = [[0.1, -0.2, 0.3, 0.0, 0.05, -0.1, 0.2, 0.1], [-0.3, 0.1, 0.0, 0.2, 0.1, 0.3, -0.2, 0.05]]
HIDDEN_BIAS = [0.1, -0.05]
OUT_WEIGHT, OUT_BIAS = [0.7, -0.4], 0.2


def hand_theta(student_row: list[float], teacher_row: list[float]) -> float:
    inputs = teacher_row + student_row
    hidden = [max(0.0, sum(w * x for w, x in zip(row, inputs)) + b) for row, b in zip(HIDDEN_WEIGHT, HIDDEN_BIAS)]
    return sum(w * h for w, h in zip(OUT_WEIGHT, hidden)) + OUT_BIAS


def hand_instance_loss(out_bias: float = OUT_BIAS) -> float:
    per_sample = []
    for s_row, t_row in zip(STUDENT_LOGITS, TEACHER_LOGITS):
        theta = hand_theta(s_row, t_row) - OUT_BIAS + out_bias
        per_sample.append(hand_kd([s_row], [t_row], 1 + 20 / (1 + math.exp(-theta))))
    return mean(per_sample)


def instance_term() -> nn.Module:
    (term,) = build_loss_terms({"ctkd": {"mode": "instance", "hidden": 2}}).values()
    student = nn.Linear(1, 4)
    student.num_classes = 4  # what timm models say; the MLP is sized from it
    term.attach(student, None)
    mlp = term.instance_temperature.mlp
    with torch.no_grad():
        mlp[0].weight.copy_(torch.tensor(HIDDEN_WEIGHT))
        mlp[0].bias.copy_(torch.tensor(HIDDEN_BIAS))
        mlp[2].weight.copy_(torch.tensor([OUT_WEIGHT]))
        mlp[2].bias.fill_(OUT_BIAS)
    return term.double()


def test_instance_kd_loss_is_each_samples_kd_at_its_own_temperature():
    student, teacher = torch.tensor(STUDENT_LOGITS, dtype=DOUBLE), torch.tensor(TEACHER_LOGITS, dtype=DOUBLE)
    temperatures = [1.5, 4.0, 9.0]
    expected = mean([hand_kd([s], [t], T) for s, t, T in zip(STUDENT_LOGITS, TEACHER_LOGITS, temperatures)])
    assert_close(instance_kd_loss(student, teacher, torch.tensor(temperatures, dtype=DOUBLE)), scalar(expected))


def test_instance_mode_takes_the_mlps_temperature_and_reverses_only_its_gradient():
    term = instance_term()
    student = torch.tensor(STUDENT_LOGITS, dtype=DOUBLE, requires_grad=True)
    teacher = torch.tensor(TEACHER_LOGITS, dtype=DOUBLE)
    temperatures = term.current_temperature(4, student, teacher)
    expected_t = [1 + 20 / (1 + math.exp(-hand_theta(s, t))) for s, t in zip(STUDENT_LOGITS, TEACHER_LOGITS)]
    assert_close(temperatures, torch.tensor(expected_t, dtype=DOUBLE))
    value = term(DistillBatch(torch.tensor([0, 1, 2]), student, teacher, epoch=4))  # 1-based epoch 5: lambda = -0.5
    assert_close(value, scalar(hand_instance_loss()))
    value.backward()
    # The MLP ascends: d loss / d output bias by central differences of the hand computation, times lambda.
    h = 1e-6
    plain = (hand_instance_loss(OUT_BIAS + h) - hand_instance_loss(OUT_BIAS - h)) / (2 * h)
    assert_close(term.instance_temperature.mlp[2].bias.grad, torch.tensor([-0.5 * plain], dtype=DOUBLE),
                 rtol=1e-5, atol=1e-8)
    # The student only descends KD at those temperatures: no gradient reaches it through the MLP.
    fixed = student.detach().clone().requires_grad_(True)
    instance_kd_loss(fixed, teacher, torch.tensor(expected_t, dtype=DOUBLE)).backward()
    assert_close(student.grad, fixed.grad)


def test_global_mode_is_unchanged_and_bad_modes_fail():
    (term,) = build_loss_terms({"ctkd": {}}).values()
    assert term.mode == "global" and "theta" in dict(term.named_parameters())
    with pytest.raises(ConfigError, match=r"loss.ctkd.mode='local'.*choose mode global .* or instance"):
        build_loss_terms({"ctkd": {"mode": "local"}})
    (term,) = build_loss_terms({"ctkd": {"mode": "instance"}}).values()
    with pytest.raises(ConfigError, match="sizes its MLP from the student's num_classes"):
        term.attach(nn.Linear(2, 3), None)


def test_instance_ctkd_trains_one_epoch_and_checkpoints_its_mlp(make_cfg):
    cfg = make_cfg("loss=ctkd_instance", "trainer.max_epochs=1", "trainer.limit_train_batches=3",
                   "trainer.limit_val_batches=1", "trainer.limit_test_batches=1", "teacher.train.max_epochs=1",
                   "report.enabled=false")
    run(cfg)
    run_dir = Path(cfg.paths.output_dir)
    state = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert state["loss_terms.ctkd.instance_temperature.mlp.0.weight"].shape == (128, 20)  # [teacher, student] x 10
    assert "loss_terms.ctkd.theta" not in state
    assert "train/loss/ctkd" in (run_dir / "csv" / "metrics.csv").read_text().splitlines()[0]
