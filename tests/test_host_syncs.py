"""A training step does not wait for the device: at most one host sync per ``log_every_n_steps`` steps."""

from __future__ import annotations

import pytest

import distill.fit
from distill.runner import run
from tests.helpers.host_syncs import SyncCounter, counting_syncs


@pytest.mark.parametrize("loss", ["kd", "fitnet"])
def test_fifty_steps_with_the_default_callbacks_and_logger_sync_once_per_logging_interval(make_cfg, monkeypatch,
                                                                                        loss):
    # Default callbacks (checkpoints, progress bar) and logger (wandb, offline); batch 16 gives 81 steps in
    # the epoch, so steps 1..50 are all inside it. kd reads cached teacher logits, fitnet runs the teacher live.
    cfg = make_cfg(f"loss={loss}", "teacher=small_cnn", "teacher.train.max_epochs=1", "student=small_cnn",
                   "trainer.max_epochs=1", "data.batch_size=16", "trainer.limit_val_batches=1",
                   "trainer.limit_test_batches=1", "report.enabled=false", fast=False, shared_cache=True)
    counter = SyncCounter(first=1, last=50)
    instantiate_group = distill.fit.instantiate_group

    def with_counter(group):
        instances = instantiate_group(group)
        if group is not None and "model_checkpoint" in group:  # the callbacks group of each fit
            counter.calls.clear()
            counter.steps = 0
            instances.append(counter)
        return instances

    monkeypatch.setattr(distill.fit, "instantiate_group", with_counter)
    with counting_syncs(counter):
        run(cfg)
    assert counter.steps == 50
    allowed = 50 // cfg.trainer.log_every_n_steps
    where = "\n".join(f"{method}:\n{stack}" for method, stack in counter.calls[:allowed + 3])
    assert len(counter.calls) <= allowed, f"{len(counter.calls)} syncing calls in 50 steps:\n{where}"
