"""AB: the activation-boundary loss by loops, and its initialisation stage in a run."""

from __future__ import annotations

from pathlib import Path

import torch
from torch.testing import assert_close

from distill.losses import ab_loss, activation_boundary_loss
from distill.runner import run
from tests.losses.helpers import randn, scalar
from tests.test_feature_taps import read_csv_metrics


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


def test_ab_init_stage_trains_ab_alone_then_drops_out(make_cfg):
    cfg = make_cfg("loss=ab", "loss.ab.hint_only_epochs=1", "trainer.max_epochs=2", "trainer.limit_train_batches=2",
                   "teacher.train.max_epochs=1")
    run(cfg)
    by_epoch = {}
    for row in read_csv_metrics(Path(cfg.paths.output_dir)):
        if row.get("train/loss_epoch"):
            by_epoch[int(row["epoch"])] = row
    assert by_epoch[0]["train/loss/ab"] and not by_epoch[0].get("train/loss/ce")
    assert by_epoch[1]["train/loss/ce"] and not by_epoch[1].get("train/loss/ab")
