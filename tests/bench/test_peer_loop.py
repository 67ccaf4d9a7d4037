"""python -m scripts.bench peer-loop: torchdistill's side built from our run's recipe gives our loss values, our
learning-rate sequence, our regressor and our augmentation; without our runs it says which command trains them; a
miniature on digits runs, keeps its results and never runs a finished seed again.

torchdistill is the ``bench`` extra, which ``make test`` installs (``.[dev,bench]``): these tests never skip.
"""

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from torch import nn

from distill.export import export_model
from distill.losses.features import FitNetLoss, hint_loss
from distill.losses.logits import kd_loss
from distill.models import create_model
from scripts.bench import peer_loop, torchdistill_loop
from scripts.bench.grid import loss_preset
from scripts.bench.peers import kd_loss_by_hand
from tests.bench.conftest import kept_seed

EPOCHS = 4


def our_run_config(method: str) -> dict:
    """What run_config.json holds of a strong-grid row, on digits (8x8 images: every step takes milliseconds)."""
    return {"stage": "distill", "seed": 0,
            "data": {"_target_": "distill.data.DigitsDataModule", "batch_size": 32, "eval_batch_size": 256,
                     "random_crop_padding": 1, "horizontal_flip": True},
            "student": {"name": "cifar_resnet8", "kwargs": {}}, "teacher": {"name": "cifar_resnet20"},
            "loss": loss_preset(method),
            "optimizer": {"_target_": "torch.optim.SGD", "_partial_": True, "lr": 0.05, "momentum": 0.9,
                          "weight_decay": 5e-4, "nesterov": True},
            "scheduler": {"_target_": "torch.optim.lr_scheduler.CosineAnnealingLR", "_partial_": True,
                          "T_max": EPOCHS},
            "trainer": {"max_epochs": EPOCHS, "limit_train_batches": 3, "gradient_clip_val": None,
                        "accumulate_grad_batches": 1, "precision": "32-true"}}


@pytest.fixture
def ours(tmp_path: Path) -> Path:
    """Our finished kd and fitnet runs (two seeds each, with learning curves) and the teacher's cache entry."""
    folder = tmp_path / "ours"
    entry = tmp_path / "cache" / "teachers" / "k"
    export_model(create_model("cifar_resnet20", 10, 1), "cifar_resnet20", {"num_classes": 10, "in_chans": 1}, entry,
                 stem="teacher")
    (folder / "teacher").mkdir(parents=True)
    (folder / "teacher" / "metrics.json").write_text(json.dumps({"teacher": {"cache_entry": str(entry),
                                                                             "cache_key": "k"}}))
    for method in peer_loop.METHODS:
        for seed, top1 in enumerate([0.80, 0.82]):
            run = kept_seed(folder / method / str(seed), top1, 78_000, our_run_config(method))
            (run / "csv").mkdir()
            (run / "csv" / "metrics.csv").write_text("epoch,step,val/acc_top1\n0,2,0.5\n0,2,\n1,5,0.7\n")
    records = {m: {"command": f"python -m distill.train -m seed=0,1 hydra.sweep.dir=/x loss={m}"}
               for m in peer_loop.METHODS}
    (folder / "records.json").write_text(json.dumps(records))
    return folder


@pytest.fixture
def models_and_data() -> tuple:
    recipe = torchdistill_loop.read_recipe("kd", our_run_config("kd"))
    data, datamodule = torchdistill_loop.datasets(recipe)
    torch.manual_seed(0)
    return create_model("cifar_resnet8", 10, 1), create_model("cifar_resnet20", 10, 1).eval(), data, datamodule


def box_for(method: str, models_and_data: tuple):
    student, teacher, data, datamodule = models_and_data
    recipe = torchdistill_loop.read_recipe(method, our_run_config(method))
    return torchdistill_loop.build_box(recipe, student, teacher, data, datamodule, torch.device("cpu"), EPOCHS)


def layer_output(model: nn.Module, path: str, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits, the output of ``path``) of one forward pass."""
    seen = []
    handle = model.get_submodule(path).register_forward_hook(lambda module, args, out: seen.append(out))
    logits = model(images)
    handle.remove()
    return logits, seen[0]


def test_kd_loss_is_ours_on_the_same_logits(models_and_data):
    box = box_for("kd", models_and_data)
    generator = torch.Generator().manual_seed(1)
    student, teacher = torch.randn(16, 10, generator=generator, dtype=torch.float64) * 3, torch.randn(
        16, 10, generator=generator, dtype=torch.float64) * 3
    labels = torch.randint(0, 10, (16,), generator=generator)
    theirs = box.criterion({"student": {".": {"output": student}}, "teacher": {".": {"output": teacher}}}, {}, labels)
    ours = 0.1 * F.cross_entropy(student, labels) + 0.9 * kd_loss(student, teacher, 4.0)  # conf/loss/kd.yaml
    assert theirs.item() == pytest.approx(ours.item(), rel=1e-12)
    assert theirs.item() == pytest.approx(kd_loss_by_hand(student, teacher, labels).item(), rel=1e-12)
    # The same through the box's hooks and forward passes, the student in eval mode (no batch statistics).
    images, targets = models_and_data[2]["val"].tensors[0][:32], models_and_data[2]["val"].tensors[1][:32]
    box.student_model.eval()
    with torch.no_grad():
        by_box = box.forward_process(images, targets, {}).item()
        by_hand = kd_loss_by_hand(models_and_data[0](images), models_and_data[1](images), targets).item()
    assert by_box == pytest.approx(by_hand, rel=1e-5)


def test_fitnet_regressor_and_loss_are_ours(models_and_data):
    box = box_for("fitnet", models_and_data)
    student, teacher, data, _ = models_and_data
    images, targets = data["val"].tensors[0][:32], data["val"].tensors[1][:32]
    # Our FitNet term (conf/loss/fitnet.yaml: '@-2' is layer2 on both) builds its regressor from the features.
    _, student_feature = layer_output(student.eval(), "layer2", images)
    _, teacher_feature = layer_output(teacher, "layer2", images)
    term = FitNetLoss(100.0, "@-2", "@-2")
    term.build({"@-2": student_feature}, {"@-2": teacher_feature})
    regressor = box.student_model.connector_dict["regressor"]
    assert [type(m) for m in regressor] == [nn.Conv2d, nn.BatchNorm2d] == [type(m) for m in term.regressor.children()]
    assert regressor[0].bias is None and term.regressor.conv.bias is None
    assert regressor[0].weight.shape == term.regressor.conv.weight.shape == (32, 32, 1, 1)
    regressor.load_state_dict({k.replace("conv.", "0.").replace("bn.", "1."): v
                               for k, v in term.regressor.state_dict().items()})
    box.student_model.eval()
    with torch.no_grad():
        by_box = box.forward_process(images, targets, {}).item()
        logits, student_feature = layer_output(student, "layer2", images)
        by_hand = F.cross_entropy(logits, targets) + 100 * hint_loss(term.regressor.eval()(student_feature),
                                                                     teacher_feature)
    assert by_box == pytest.approx(by_hand.item(), rel=1e-5)


@pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step\\(\\)` before")  # no training steps here
def test_learning_rate_sequence_and_parameters_are_ours(models_and_data):
    box = box_for("fitnet", models_and_data)
    student, regressor = models_and_data[0], box.student_model.connector_dict["regressor"]
    config = our_run_config("fitnet")
    # What our module's configure_optimizers makes of the same config: the student's and the regressor's parameters.
    optimizer = instantiate(config["optimizer"])(params=[*student.parameters(), *regressor.parameters()])
    scheduler = instantiate(config["scheduler"])(optimizer)
    theirs, ours = [], []
    for _ in range(EPOCHS):
        theirs.append(box.optimizer.param_groups[0]["lr"])
        ours.append(optimizer.param_groups[0]["lr"])
        box.post_epoch_process()  # torchdistill's epoch-wise scheduler step
        scheduler.step()  # Lightning's, interval "epoch"
    assert theirs == pytest.approx(ours)
    assert theirs == pytest.approx([0.05 * (1 + math.cos(math.pi * e / EPOCHS)) / 2 for e in range(EPOCHS)])
    group, our_group = box.optimizer.param_groups[0], optimizer.param_groups[0]
    assert {k: group[k] for k in ("momentum", "nesterov", "weight_decay", "dampening")} == {
        k: our_group[k] for k in ("momentum", "nesterov", "weight_decay", "dampening")}
    assert {id(p) for p in group["params"]} == {id(p) for p in our_group["params"]}


def test_training_images_are_our_augmentation_variants(models_and_data):
    _, _, data, datamodule = models_and_data
    originals = datamodule.splits["train"].images
    for index in range(20):
        image, label = data["train"][index]
        variants = torch.cat([datamodule.augment_variant(originals[index:index + 1], v)
                              for v in range(datamodule.augmentation_variants)])
        assert any(torch.equal(image, variant) for variant in variants)
        assert label == datamodule.splits["train"].labels[index]


def test_missing_runs_name_the_command_that_trains_them(ours, tmp_path):
    with pytest.raises(SystemExit, match=r"python -m scripts\.bench methods --setting strong --methods kd fitnet"):
        peer_loop.main(["--ours", str(tmp_path / "nothing"), "--out-dir", str(tmp_path / "out")])
    with pytest.raises(SystemExit, match=r"runs of \['fitnet'\] are missing"):
        peer_loop.main(["--ours", str(ours), "--seeds", "3", "--methods", "fitnet", "--out-dir", str(tmp_path / "o")])


def test_a_setting_torchdistill_has_no_equivalent_for_is_refused():
    config = our_run_config("kd")
    config["trainer"]["gradient_clip_val"] = 1.0
    with pytest.raises(SystemExit, match="gradient_clip_val"):
        torchdistill_loop.read_recipe("kd", config)


def test_timing_runs_the_rows_command_for_a_few_epochs_with_its_teacher_file(tmp_path):
    command = peer_loop.timing_command(
        "python -m distill.train -m seed=0,1,2 hydra.sweep.dir=/o/kd experiment=fmnist_strong trainer.max_epochs=30 "
        "trainer.limit_train_batches=100 resume=auto loss=kd", Path("/t/teacher.json"), 2, tmp_path / "run",
        tmp_path / "times.json", 30)
    overrides = command[3:]
    assert command[1:3] == ["-m", "distill.train"] and "-m" not in overrides
    assert {"experiment=fmnist_strong", "trainer.limit_train_batches=100", "loss=kd", "seed=0",
            "trainer.max_epochs=2", "scheduler.T_max=30", "teacher.weights=/t/teacher.json"} <= set(overrides)
    assert not [o for o in overrides if o.startswith(("hydra.sweep.dir", "resume", "seed=0,", "trainer.max_epochs=30"))]
    assert any("scripts.bench.peer_loop.EpochClock" in o for o in overrides)


def test_mini_trains_keeps_its_results_and_never_reruns_a_finished_seed(ours, tmp_path, monkeypatch, capsys):
    out, kept = tmp_path / "out", tmp_path / "kept"
    options = ["--mini", "--ours", str(ours), "--timing-epochs", "0", "--device", "cpu", "--results", str(kept)]
    assert peer_loop.main([*options, "--plan", "--out-dir", str(out)]) is None
    assert "estimated time" in capsys.readouterr().out
    summary = peer_loop.main([*options, "--out-dir", str(out)])
    for method in peer_loop.METHODS:
        result = json.loads((out / "torchdistill" / method / "0" / "result.json").read_text())
        assert len(result["val_acc_top1"]) == len(result["lr"]) == 1 and result["lr"] == [0.05]
        assert 0 <= result["test_acc_top1_best"] <= 1 and 0 <= result["test_acc_top1_last"] <= 1
        assert (kept / "torchdistill" / method / "0" / "result.json").is_file()
        row = summary["methods"][method]
        assert row["ours"]["best"] == pytest.approx([80.0]) and row["torchdistill"]["seeds"] == 1  # --mini: 1 seed
        assert [[round(v, 6) for v in point] for point in row["ours"]["curve"]] == [[1, 50.0, 0.0], [2, 70.0, 0.0]]
    assert (out / "peer_loop.png").stat().st_size > 0 and (kept / "peer_loop.json").is_file()
    section = (out / "benchmarks.md").read_text()  # --mini: beside the results, never docs/
    assert "<!-- method-table:peer-loop:start -->" in section and "![Validation top-1 per epoch, both loops](" \
        "../kept/peer_loop.png)" in section
    assert "| kd | ours | 1 | 80.00 ± n/a |" in section and "- **kd**: torchdistill − ours n/a" in section

    def no_training(*args, **kwargs):
        raise AssertionError("a finished seed was trained again")

    monkeypatch.setattr(peer_loop, "run_torchdistill", no_training)
    peer_loop.main([*options, "--out-dir", str(out)])
    # A new machine: an empty out-dir gets the kept results back, and trains nothing.
    again = peer_loop.main([*options, "--out-dir", str(tmp_path / "fresh")])
    assert again["methods"]["kd"]["torchdistill"]["best"] == summary["methods"]["kd"]["torchdistill"]["best"]


def test_the_table_says_whether_the_loops_agree(tmp_path):
    """3 seeds a side, both with a std of 1 point: the difference +0.50 has se 0.816 and 4 degrees of freedom
    (t 2.776), so [-1.77, +2.77] holds 0 and the loops agree; 3 points apart they differ."""
    ours = [kept_seed(tmp_path / "kd" / str(seed), top1, 78_000, None) for seed, top1 in enumerate([0.90, 0.91, 0.92])]

    def theirs(offset: float) -> list[dict]:
        return [{"test_acc_top1_best": top1 + offset, "test_acc_top1_last": top1, "seconds": 100.0,
                 "val_acc_top1": [0.5, 0.6], "teacher_test_acc_top1": 0.936} for top1 in (0.90, 0.91, 0.92)]

    for offset, verdict in ((0.005, "**the two agree** (the interval holds 0)"),
                            (0.03, "**they differ** (the interval excludes 0)")):
        summary = {"methods": {"kd": peer_loop.compare("kd", ours, theirs(offset))}}
        lines = peer_loop.markdown_table(summary)
        assert lines[2] == "| kd | ours | 3 | 91.00 ± 2.48 | 91.00 | 60 | n/a |"  # t(2) 4.303 x 1 / sqrt(3)
        assert lines[-1].startswith(f"- **kd**: torchdistill − ours {100 * offset:+.2f} [")
        assert lines[-1].endswith(verdict)
    assert "[-1.77, +2.77]" in peer_loop.markdown_table(
        {"methods": {"kd": peer_loop.compare("kd", ours, theirs(0.005))}})[-1]
