"""Cached teacher outputs with augmentation: one entry per crop/flip variant, read back for the exact variant."""

from __future__ import annotations

import logging

import pytest
import torch
from hydra.utils import instantiate

from distill.data.base import augment_batch
from distill.teacher_outputs import cached_teacher_outputs
from distill.train import run
from tests.test_teacher_outputs import trained_like_teacher

AUGMENTED = ["data.random_crop_padding=1", "data.horizontal_flip=true"]  # 3 x 3 offsets x 2 flips = 18 variants


def test_variant_numbers_name_the_augmentation_each_image_got(make_cfg):
    cfg = make_cfg(*AUGMENTED)
    data = instantiate(cfg.data)
    data.setup()
    assert data.augmentation_variants == 18
    images = data.splits["train"].images[:64]
    draws = {name: value[:64] for name, value in data._augmentation_draws(3, torch.device("cpu")).items()}
    augmented = augment_batch(images, 1, draws)
    variants = data.variant_ids(draws)
    assert len(set(variants.tolist())) > 9  # the draws cover many variants, so the inverse is really exercised
    for i, variant in enumerate(variants.tolist()):
        assert torch.equal(data.augment_variant(images[i:i + 1], variant)[0], augmented[i])


def test_cached_outputs_of_an_augmented_batch_equal_the_live_teachers(make_cfg, caplog):
    cfg = make_cfg(*AUGMENTED)
    data = instantiate(cfg.data)
    teacher = trained_like_teacher()
    with caplog.at_level(logging.INFO, logger="distill"):
        outputs = cached_teacher_outputs(cfg, teacher, data)
    assert outputs is not None and outputs.variants("train") == 18 and outputs.variants("val") == 1
    assert "bytes per training image (18 augmentation variant(s))" in caplog.text
    assert f"{18 * 10 * 2} bytes per training image" in caplog.text  # fp16 logits: variants x classes x 2
    assert "x 18 variant(s)" in caplog.text and " s and cached in " in caplog.text  # build size and time
    train = data.splits["train"]
    for epoch in (0, 5):
        indices = torch.randperm(len(train.labels), generator=torch.Generator().manual_seed(epoch))[:128]
        draws = {name: value[indices] for name, value in data._augmentation_draws(epoch, torch.device("cpu")).items()}
        images = augment_batch(train.images[indices], 1, draws)
        with torch.no_grad():
            live = teacher(images)
        cached = outputs.lookup("train", indices, data.variant_ids(draws))
        torch.testing.assert_close(cached, live, atol=2e-2, rtol=1e-3)  # fp16 storage
        unaugmented = outputs.lookup("val", torch.arange(8))
        with torch.no_grad():
            torch.testing.assert_close(unaugmented, teacher(data.splits["val"].images[:8]), atol=2e-2, rtol=1e-3)
    with pytest.raises(ValueError, match="hold 18 augmentation variant"):
        outputs.lookup("train", indices)


def test_a_sweep_over_seeds_builds_the_augmented_cache_once(make_cfg, caplog):
    overrides = [*AUGMENTED, "trainer.max_epochs=1", "teacher.train.max_epochs=1", "trainer.limit_train_batches=3",
                 "trainer.limit_val_batches=1", "trainer.limit_test_batches=1", "report.enabled=false"]
    with caplog.at_level(logging.INFO, logger="distill"):
        for seed in (0, 1, 2):
            assert run(make_cfg(*overrides, f"seed={seed}", run=f"seed{seed}")) is not None
    assert caplog.text.count("teacher outputs computed once") == 1
    assert caplog.text.count("teacher outputs read from the cache") == 2
    assert "teacher runs live" not in caplog.text
