"""Cached teacher outputs with augmentation: one entry per crop/flip variant, read back for the exact variant."""

from __future__ import annotations

import logging

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from distill.config import to_dict
from distill.data.base import augment_batch
from distill.losses import build_loss_terms
from distill.runner import run
from distill.teacher.logits_cache import build_cost_text, build_pays, cached_teacher_outputs, live_teacher_passes
from tests.teacher.test_logits_cache import trained_like_teacher

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
    cfg = make_cfg(*AUGMENTED, "teacher_cache.augmentations=true")
    data = instantiate(cfg.data)
    teacher = trained_like_teacher()
    with caplog.at_level(logging.INFO, logger="distill"):
        outputs = cached_teacher_outputs(cfg, teacher, data, build_loss_terms(to_dict(cfg.loss)))
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


SHORT_RUN = [*AUGMENTED, "trainer.max_epochs=1", "teacher.train.max_epochs=1", "trainer.limit_train_batches=3",
             "trainer.limit_val_batches=1", "trainer.limit_test_batches=1", "report.enabled=false"]


def test_a_sweep_over_seeds_builds_the_augmented_cache_once(make_cfg, caplog):
    overrides = [*SHORT_RUN, "teacher_cache.runs_sharing=200"]  # declared: 200 short runs will read it
    with caplog.at_level(logging.INFO, logger="distill"):
        for seed in (0, 1, 2):
            assert run(make_cfg(*overrides, f"seed={seed}", run=f"seed{seed}")) is not None
    assert caplog.text.count("teacher outputs computed once") == 1
    assert caplog.text.count("teacher outputs read from the cache") == 2
    assert "teacher runs live" not in caplog.text
    # Said once, before the build: its teacher passes against one run's (1 epoch x 3 batches) x the runs sharing it.
    data = instantiate(make_cfg(*overrides).data)
    data.setup()
    build, live = 18 * len(data.splits["train"].labels), 3 * data.batch_size
    assert caplog.text.count("teacher_cache: building it: a cache build takes") == 1
    assert (f"takes {build:,} teacher passes, {build / live:.1f}x the {live:,} of this run's live teacher x 200 runs "
            "(teacher_cache.runs_sharing); it pays within the runs that share it") in caplog.text


def test_by_default_a_build_that_costs_more_than_the_run_is_not_made(make_cfg, caplog):
    with caplog.at_level(logging.INFO, logger="distill"):
        assert run(make_cfg(*SHORT_RUN)) is not None
    assert "teacher outputs computed once" not in caplog.text
    assert "teacher_cache: the teacher runs live: a cache build takes" in caplog.text
    assert "teacher_cache.runs_sharing=N" in caplog.text and "teacher_cache.augmentations=true" in caplog.text
    caplog.clear()
    forced = make_cfg(*SHORT_RUN, "teacher_cache.augmentations=true", run="forced")
    with caplog.at_level(logging.INFO, logger="distill"):
        assert run(forced) is not None
    assert "teacher outputs computed once" in caplog.text and "(teacher_cache.augmentations=true)" in caplog.text


def test_live_teacher_passes_and_when_a_build_pays():
    def trainer(**options: float) -> DictConfig:
        return OmegaConf.create(options)

    assert live_teacher_passes(trainer(max_epochs=60, limit_train_batches=100), 54_996, 128) == 60 * 100 * 128
    assert live_teacher_passes(trainer(max_epochs=2, limit_train_batches=0.5), 1000, 100) == 2 * 5 * 100
    assert live_teacher_passes(trainer(max_epochs=3), 1001, 100) == 3 * 11 * 100  # last batch partial
    assert live_teacher_passes(trainer(max_epochs=30, fast_dev_run=True), 1000, 100) == 100  # one batch, once
    # The case: resnet18 on Fashion-MNIST, 1 epoch of 30 batches, 50 variants of 54,996 images.
    assert not build_pays(50 * 54_996, live_teacher_passes(trainer(max_epochs=1, limit_train_batches=30), 54_996,
                                                           128), runs=1)
    assert build_pays(50 * 54_996, 60 * 100 * 128, runs=4) and not build_pays(50 * 54_996, 60 * 100 * 128, runs=3)
    assert "2.5x the 20,000 of this run's live teacher" in build_cost_text(50_000, 20_000)
    assert "x 3 runs (teacher_cache.runs_sharing)" in build_cost_text(50_000, 20_000, runs=3)
    assert "10000.0x the 0 of this run's live teacher" in build_cost_text(10_000, 0)  # no training: no division by 0
