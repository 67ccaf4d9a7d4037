"""A live teacher's validation logits are kept from the first pass (distill/teacher/eval_logits.py): later
validations give the same metrics without running the teacher, and images that change between passes turn the
store off instead of giving the teacher's metrics from other images."""

from __future__ import annotations

import csv
import logging
from pathlib import Path

import torch
from hydra.utils import instantiate

from distill.runner import run
from distill.teacher.eval_logits import EvalTeacherLogits

# fitnet: a feature term, so the teacher runs live (no teacher-output cache); three validations and a test.
LIVE_TEACHER = ["loss=fitnet", "trainer.max_epochs=3", "trainer.limit_train_batches=3", "trainer.limit_val_batches=3",
                "trainer.limit_test_batches=2", "data.eval_batch_size=64", "report.enabled=false"]


def test_kept_rows_are_given_only_for_indices_seen_before():
    store = EvalTeacherLogits()
    logits = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]], dtype=torch.float64)
    assert store.lookup(torch.tensor([0, 1])) is None  # nothing kept yet
    store.add(torch.tensor([4, 1, 2]), logits)
    assert store.lookup(torch.tensor([1, 3])) is None  # 3 was never added
    assert store.lookup(torch.tensor([9])) is None  # beyond the largest index kept
    assert torch.equal(store.lookup(torch.tensor([2, 4])), logits[[2, 0]])
    store.add(torch.tensor([7]), logits[:1])  # grows, keeping the rows before
    assert torch.equal(store.lookup(torch.tensor([7, 1])), logits[[0, 1]])


def test_a_first_pass_in_index_order_grows_the_store_by_doubling():
    store = EvalTeacherLogits()
    capacities = []
    for index in range(100):
        store.add(torch.tensor([index]), torch.full((1, 3), float(index)))
        capacities.append(len(store.rows))
    assert sorted(set(capacities)) == [1, 2, 4, 8, 16, 32, 64, 128]  # 8 copies, not 100
    assert torch.equal(store.lookup(torch.arange(100)), torch.arange(100.0).unsqueeze(1).expand(100, 3))
    assert store.lookup(torch.tensor([100])) is None  # room for it, but never added


def test_rows_that_differ_from_a_live_pass_turn_the_store_off(caplog):
    store = EvalTeacherLogits()
    store.add(torch.tensor([0, 1]), torch.tensor([[1.0, 2.0], [3.0, 4.0]]))
    kept = store.lookup(torch.tensor([0, 1]))
    assert store.verify(kept, kept + 1e-5) and store.verified  # the same images: equal within float noise
    other = EvalTeacherLogits()
    other.add(torch.tensor([0, 1]), torch.tensor([[1.0, 2.0], [3.0, 4.0]]))
    with caplog.at_level(logging.WARNING, logger="distill"):
        assert not other.verify(other.lookup(torch.tensor([0, 1])), torch.tensor([[1.0, 2.5], [3.0, 4.0]]))
    assert other.off and other.lookup(torch.tensor([0, 1])) is None
    assert "differ between passes" in caplog.text
    other.add(torch.tensor([0]), torch.tensor([[1.0, 2.0]]))  # off stays off
    assert other.lookup(torch.tensor([0])) is None


def test_more_numbers_than_the_limit_are_not_kept(caplog):
    store = EvalTeacherLogits(max_values=10)
    with caplog.at_level(logging.INFO, logger="distill"):
        store.add(torch.tensor([0, 5]), torch.zeros(2, 2))  # 6 rows x 2 = 12 numbers
    assert store.off and store.lookup(torch.tensor([0])) is None
    assert "more than 10 numbers" in caplog.text


def val_rows(cfg) -> list[dict[str, str]]:
    rows = csv.DictReader((Path(cfg.paths.output_dir) / "csv" / "metrics.csv").open())
    return [{key: value for key, value in row.items() if key.startswith("val/")} for row in rows
            if row.get("val/acc_top1")]


def test_validation_with_kept_teacher_logits_logs_what_the_live_teacher_gives(make_cfg, monkeypatch):
    teacher_calls: list[str] = []
    original = EvalTeacherLogits.lookup

    def counting_lookup(self, indices):
        kept = original(self, indices)
        teacher_calls.append("kept" if kept is not None and self.verified else "live")
        return kept

    monkeypatch.setattr(EvalTeacherLogits, "lookup", counting_lookup)
    kept_cfg = make_cfg(*LIVE_TEACHER, run="kept", shared_cache=True)
    run(kept_cfg)
    # The sanity check's 2 batches run the teacher; epoch 0 checks its first kept batch against the teacher, reads
    # the second and runs the teacher on the third (not seen before); epochs 1 and 2 read all three.
    assert teacher_calls == ["live"] * 2 + ["live", "kept", "live"] + ["kept"] * 6, teacher_calls

    monkeypatch.setattr(EvalTeacherLogits, "lookup", lambda self, indices: None)  # the teacher on every batch
    live_cfg = make_cfg(*LIVE_TEACHER, run="live", shared_cache=True)
    run(live_cfg)
    kept, live = val_rows(kept_cfg), val_rows(live_cfg)
    assert len(kept) == 3 and kept == live  # every val metric, teacher accuracy and agreement included
    assert "val/teacher_acc_top1" in kept[0] and kept[0]["val/teacher_acc_top1"]


def test_the_test_split_runs_the_teacher(make_cfg, monkeypatch):
    """The store is for validation, which repeats; the test split is evaluated once and is never read from it."""
    added: list[int] = []
    original = EvalTeacherLogits.add

    def counting_add(self, indices, logits):
        added.append(len(indices))
        original(self, indices, logits)

    monkeypatch.setattr(EvalTeacherLogits, "add", counting_add)
    cfg = make_cfg(*LIVE_TEACHER, "trainer.max_epochs=1", run="test", shared_cache=True)
    run(cfg)
    datamodule = instantiate(cfg.data)
    datamodule.setup("fit")
    assert sum(added) == len(datamodule.val_dataloader().dataset) < 3 * 64  # each validation image once, no test image
