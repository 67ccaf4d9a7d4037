"""What each training step records without a host sync, and where the epoch's means go.

The step writes one vector (total, terms, train accuracy) into the divergence watch's rows and the epoch
sums; the epoch end turns the means into numbers once and hands them to the loggers, the callbacks'
metrics and the progress bar, where ``self.log`` would have put them (it is bypassed for speed).
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger

from distill.data import DigitsDataModule
from distill.epoch_means import EpochMeans
from distill.errors import DivergenceError
from distill.losses import build_loss_terms
from distill.models import create_model
from distill.module import DistillationModule, weighted_total
from distill.reliability.guard import NonFiniteWatch

NAMES = ("total", "ce", "kd", "acc_top1")


def test_the_watch_names_the_first_bad_step_among_the_rows_since_the_last_check():
    watch = NonFiniteWatch(capacity=2)  # five rows: the buffer grows twice, no row is lost
    rows = [[1.0, 0.5, 0.5, 0.25], [0.9, 0.4, 0.5, 0.5], [math.inf, 0.3, math.inf, 0.5],
            [math.nan, math.nan, math.nan, 0.0], [0.8, 0.4, 0.4, 0.5]]
    for step, row in zip(range(10, 15), rows, strict=True):
        watch.update(torch.tensor(row), NAMES, step, epoch=3)
    with pytest.raises(DivergenceError) as caught:
        watch.check()
    error = caught.value
    assert (error.term, error.value, error.step, error.epoch) == ("term 'kd'", math.inf, 12, 3)


def test_a_clean_check_forgets_the_rows_and_returns_the_value_read_with_it():
    watch = NonFiniteWatch()
    watch.update(torch.tensor([1.0, 0.5, 0.5, 1.0]), NAMES, 0, 0)
    assert watch.check(read=torch.tensor(2.5)) == 2.5
    assert watch.count == 0 and watch.steps == []
    # Only the weighted total non-finite (two huge finite terms): the message says so.
    watch.update(torch.tensor([math.inf, 3e38, 3e38, 1.0]), NAMES, 7, 1)
    with pytest.raises(DivergenceError, match="the weighted total = inf at epoch 1, step 7"):
        watch.check()


def test_epoch_means_weight_each_step_by_its_batch_size_and_fill_only_its_positions():
    means = EpochMeans(["total", "fitnet", "kd", "acc_top1"])
    means.update(torch.tensor([1.0, 2.0, 3.0, 0.5]), means.positions(["total", "fitnet", "kd", "acc_top1"]), 2)
    means.update(torch.tensor([4.0, 6.0, 1.0]), means.positions(["total", "kd", "acc_top1"]), 1)
    computed = {name: float(value) for name, value in means.compute().items()}
    # total (2*1 + 4)/3, fitnet only from the first step, kd (2*3 + 6)/3, accuracy (2*0.5 + 1)/3
    assert computed == pytest.approx({"total": 2.0, "fitnet": 2.0, "kd": 4.0, "acc_top1": 2.0 / 3.0})


def test_the_weighted_total_adds_no_op_for_a_weight_of_one():
    terms = build_loss_terms({"ce": {"weight": 1.0}, "kd": {"weight": 0.25}})
    ce, kd = torch.tensor(2.0, requires_grad=True), torch.tensor(4.0, requires_grad=True)
    total = weighted_total(terms, {"ce": ce, "kd": kd})
    assert float(total.detach()) == 3.0
    total.backward()
    assert (float(ce.grad), float(kd.grad)) == (1.0, 0.25)
    alone = weighted_total(terms, {"ce": ce})
    assert alone is ce  # the term itself: no multiplication, no ``0 +``


class Recorder(L.Callback):
    """What the callbacks' metrics and the progress bar hold after each epoch's end (read when the next starts)."""

    def __init__(self) -> None:
        self.seen: list[dict[str, float]] = []

    def on_train_epoch_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if trainer.current_epoch:
            self.seen.append({name: float(value) for name, value in trainer.callback_metrics.items()
                              if name.startswith("train/")} | {"bar": module.progress_values["train/acc_top1"]})


def test_epoch_means_reach_the_logger_the_monitors_and_the_progress_bar(tmp_path):
    torch.manual_seed(0)
    data = DigitsDataModule(batch_size=256)
    data.setup()
    student = create_model("small_cnn", 10, 1, {"width": 4})
    module = DistillationModule(student, build_loss_terms({"ce": {"weight": 1.0}}),
                                lambda params: torch.optim.SGD(params, lr=0.1), 10, data.input_shape)
    best = ModelCheckpoint(dirpath=tmp_path / "best", monitor="train/acc_top1", mode="max", save_top_k=1,
                           save_on_train_epoch_end=True)
    recorder = Recorder()
    trainer = L.Trainer(max_epochs=3, accelerator="cpu", logger=CSVLogger(tmp_path, name="csv", version=0),
                        callbacks=[best, recorder], enable_progress_bar=False, enable_model_summary=False,
                        limit_val_batches=1, num_sanity_val_steps=0, log_every_n_steps=1)
    trainer.fit(module, datamodule=data)

    rows = list(csv.DictReader((tmp_path / "csv" / "version_0" / "metrics.csv").open()))
    epoch_rows = [row for row in rows if row.get("train/acc_top1")]
    val_rows = [row for row in rows if row.get("val/acc_top1")]
    assert [int(row["epoch"]) for row in epoch_rows] == [0, 1, 2]
    # Same step as the values Lightning itself logs at that epoch's end (validation's).
    assert [row["step"] for row in epoch_rows] == [row["step"] for row in val_rows]
    accuracy = [float(row["train/acc_top1"]) for row in epoch_rows]
    for row in epoch_rows:
        assert float(row["train/loss_epoch"]) == pytest.approx(float(row["train/loss/ce"]), rel=1e-6)
    # ModelCheckpoint monitored the train accuracy the module handed it, epoch by epoch.
    assert float(best.best_model_score) == pytest.approx(max(accuracy), rel=1e-6)
    assert int(Path(best.best_model_path).stem.split("epoch=")[1].split("-")[0]) == accuracy.index(max(accuracy))
    seen = recorder.seen + [{name: float(value) for name, value in trainer.callback_metrics.items()
                             if name.startswith("train/")} | {"bar": module.progress_values["train/acc_top1"]}]
    for values, logged in zip(seen, epoch_rows, strict=True):
        assert values["train/acc_top1"] == values["bar"] == pytest.approx(float(logged["train/acc_top1"]))
        assert values["train/loss"] == values["train/loss_epoch"] == pytest.approx(float(logged["train/loss_epoch"]))


def test_a_state_dict_holds_every_recorded_step_once_whatever_its_batch_size():
    torch.manual_seed(0)
    student = create_model("small_cnn", 10, 1, {"width": 4})
    module = DistillationModule(student, build_loss_terms({"ce": {"weight": 1.0}}),
                                lambda params: torch.optim.SGD(params, lr=0.1), 10, (1, 8, 8))
    batches = [(torch.randn(n, 1, 8, 8), torch.randint(0, 10, (n,))) for n in (4, 4, 3)]  # last batch smaller
    expected_sums = torch.zeros(3, dtype=torch.float64)  # total, ce, accuracy, each weighted by batch size
    for images, targets in batches:
        module.training_step((images, targets), 0)
        with torch.no_grad():
            logits = student(images)  # train mode: BatchNorm uses the batch's statistics, as the step did
        ce = torch.nn.functional.cross_entropy(logits, targets).double()
        accuracy = (logits.argmax(1) == targets).double().mean()
        expected_sums += len(targets) * torch.stack([ce, ce, accuracy])
    state = module.state_dict()  # the pre-hook adds the unchecked rows: no check (and no sync) was needed
    positions = [module.train_means.names.index(name) for name in ("total", "ce", "acc_top1")]
    torch.testing.assert_close(state["train_means.sums"][positions].double(), expected_sums, rtol=1e-5, atol=1e-5)
    assert state["train_means.weights"][positions].tolist() == [11.0, 11.0, 11.0]
    module.divergence.check()  # the same rows, now checked and forgotten: not added a second time
    assert torch.equal(module.state_dict()["train_means.sums"], state["train_means.sums"])
