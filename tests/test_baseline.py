"""Runs that train a model alone (the undistilled baseline, the teacher) use full-weight cross-entropy.

A loss preset's CE weight is a mixing weight beside its distillation terms (``loss=kd``: 0.1); it must not
leak into a run that has no distillation term, or the baseline trains with steps ten times smaller.
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from safetensors.torch import load_file

from distill.fit import seed_everything
from distill.models import create_model
from distill.runner import baseline_loss, run

# One optimizer step on one batch, nothing measured afterwards: the step itself is what is compared.
ONE_STEP = ["trainer.max_epochs=1", "trainer.limit_train_batches=1", "trainer.limit_val_batches=1",
            "trainer.limit_test_batches=1", "report.enabled=false", "scheduler=none"]


def logged_train_losses(cfg) -> dict[str, float]:
    """The epoch-level training losses of a run's CSV log (one batch: the epoch value is the step value)."""
    rows = list(csv.DictReader((Path(cfg.paths.output_dir) / "csv" / "metrics.csv").open()))
    values: dict[str, float] = {}
    for row in rows:
        for key, value in row.items():
            if key.startswith("train/loss") and value:
                values[key] = float(value)
    return values


def student_weights(cfg) -> dict[str, torch.Tensor]:
    return load_file(str(Path(cfg.paths.output_dir) / "student.safetensors"))


def test_baseline_with_the_kd_preset_trains_like_loss_ce(make_cfg):
    with_kd_preset = make_cfg("stage=student", "loss=kd", *ONE_STEP, run="kd_preset")
    with_ce_preset = make_cfg("stage=student", "loss=ce", *ONE_STEP, run="ce_preset")
    run(with_kd_preset)
    run(with_ce_preset)

    losses = logged_train_losses(with_kd_preset)
    # The weighted total equals the unweighted CE term: the weight was 1, not the preset's 0.1.
    assert losses["train/loss_epoch"] == pytest.approx(losses["train/loss/ce"], rel=1e-6)
    kd_weights, ce_weights = student_weights(with_kd_preset), student_weights(with_ce_preset)
    assert kd_weights.keys() == ce_weights.keys()
    for name in kd_weights:
        torch.testing.assert_close(kd_weights[name], ce_weights[name], rtol=0, atol=0, msg=name)


def test_baseline_ce_term_is_the_hand_computed_cross_entropy_of_its_first_batch(make_cfg):
    cfg = make_cfg("stage=student", "loss=kd", *ONE_STEP, "data.batch_size=1293", run="full_batch")
    # With one batch holding the whole (shuffled) training split, the batch mean does not depend on the order.
    data = instantiate(cfg.data)
    data.setup()
    seed_everything(cfg.seed)
    student = create_model(cfg.student.name, data.num_classes, data.in_chans, cfg.student.get("kwargs"))
    train = data.splits["train"]
    student.train()
    with torch.no_grad():
        expected = F.cross_entropy(student(train.images), train.labels).item()
    run(cfg)
    losses = logged_train_losses(cfg)
    assert losses["train/loss/ce"] == pytest.approx(expected, rel=1e-4)
    assert losses["train/loss_epoch"] == pytest.approx(expected, rel=1e-4)


def test_a_ce_weight_set_on_the_command_line_is_used_and_logged(make_cfg, caplog):
    cfg = make_cfg("stage=student", "loss=kd", "loss.ce.weight=0.5", *ONE_STEP, run="explicit")
    with caplog.at_level(logging.INFO, logger="distill"):
        run(cfg, overrides=["stage=student", "loss=kd", "loss.ce.weight=0.5"])
    losses = logged_train_losses(cfg)
    assert losses["train/loss_epoch"] == pytest.approx(0.5 * losses["train/loss/ce"], rel=1e-6)
    assert "at weight 0.5: set on the command line (loss.ce.weight=0.5)" in caplog.text


def test_baseline_loss_keeps_the_presets_other_ce_options(make_cfg, caplog):
    cfg = make_cfg("loss=kd", "+loss.ce.label_smoothing=0.1")
    with caplog.at_level(logging.INFO, logger="distill"):
        loss = baseline_loss(cfg.loss)
    assert dict(loss) == {"ce": {"weight": 1.0, "label_smoothing": 0.1}}
    assert "at weight 1: the student alone trains on labels at full weight" in caplog.text
    # A preset without a CE term still gives the baseline its cross-entropy.
    assert dict(baseline_loss(make_cfg("loss=kd", "~loss.ce").loss)) == {"ce": {"weight": 1.0}}


def test_the_teachers_own_training_ignores_the_distillation_presets_ce_weight(make_cfg):
    cfg = make_cfg("stage=teacher", "loss=kd", *ONE_STEP, run="teacher")
    run(cfg)
    losses = logged_train_losses(cfg)
    assert cfg.loss.ce.weight == pytest.approx(0.1)  # the preset this run was composed with
    assert losses["train/loss_epoch"] == pytest.approx(losses["train/loss/ce"], rel=1e-6)
