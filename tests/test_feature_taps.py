"""Feature taps, adapters and presets inside the Lightning module: names, gradients, checkpoints, warm-up."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from distill.config import CONF_DIR, to_dict
from distill.errors import ConfigError
from distill.feature_taps import FeatureTaps
from distill.losses import build_loss_terms
from distill.models import create_model
from distill.module import DistillationModule
from distill.runner import run

# Every preset of conf/loss (a new one joins without an edit here), but those that need another pair or several
# teachers: tests/losses/test_presets.py and tests/schemes/test_schemes.py run them.
NOT_ON_THIS_PAIR = {"fsp", "kdsvd", "kd_per_teacher"}
PRESETS = sorted(path.stem for path in (CONF_DIR / "loss").glob("*.yaml") if path.stem not in NOT_ON_THIS_PAIR)


def pair(student_width: int = 4, teacher_width: int = 8) -> tuple[nn.Module, nn.Module]:
    return create_model("small_cnn", 10, 1, {"width": student_width}), create_model("small_cnn", 10, 1,
                                                                                    {"width": teacher_width})


def module_with(loss: dict) -> DistillationModule:
    student, teacher = pair()
    return DistillationModule(student, build_loss_terms(loss), lambda params: torch.optim.SGD(params, lr=0.1),
                              num_classes=10, input_shape=(1, 8, 8), teacher=teacher)


def test_unknown_layer_lists_valid_names():
    student, _ = pair()
    with pytest.raises(ConfigError, match=r"unknown student layer 'stages.5'.*did you mean.*stages\.[0-2].*"
                                          r"Feature layers: stages.0, stages.1, stages.2"):
        FeatureTaps(student, ["stages.5"], "student")
    with pytest.raises(ConfigError, match=r"'@N' picks feature_info\[N\]"):
        FeatureTaps(student, ["@7"], "student")


def test_layers_are_found_through_a_ddp_style_wrapper():
    student, _ = pair()

    class Wrapper(nn.Module):  # what DDP looks like from outside: the model under `.module`
        def __init__(self, module: nn.Module) -> None:
            super().__init__()
            self.module = module

        def forward(self, x):
            return self.module(x)

    wrapped = Wrapper(student)
    taps = FeatureTaps(wrapped, ["module.stages.1", "pre_logits", "@-1"], "student")
    wrapped(torch.zeros(2, 1, 8, 8))
    features = taps.pop()
    assert features["module.stages.1"].shape == (2, 8, 4, 4)
    assert features["pre_logits"].shape == (2, 16)
    assert features["@-1"].shape == (2, 16, 2, 2)
    assert taps.pop() == {}


def test_layer_whose_output_is_not_a_tensor_is_rejected():
    class TupleBlock(nn.Module):
        def forward(self, x):
            return x, x

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.block = TupleBlock()

        def forward(self, x):
            return self.block(x)[0]

    net = Net()
    FeatureTaps(net, ["block"], "student")
    with pytest.raises(ConfigError, match="layer 'block' returns tuple, not a tensor"):
        net(torch.zeros(1, 2))


def test_gradients_reach_student_and_adapters_never_the_teacher():
    module = module_with({
        "fitnet": {"weight": 1.0, "student_layer": "stages.1", "teacher_layer": "stages.2"},
        "feature_distance": {"weight": 1.0},
        "at": {"weight": 1.0, "student_layers": ["stages.1"], "teacher_layers": ["stages.1"]},
        "kd": {"weight": 1.0},
    })
    # The FitNet regressor maps 8 channels at 4x4 onto 16 channels at 2x2; the embedding adapter 16 -> 32.
    assert module.loss_terms["fitnet"].regressor.conv.weight.shape == (32, 8, 1, 1)
    assert module.loss_terms["feature_distance"].adapter.weight.shape == (32, 16)
    images, targets = torch.randn(6, 1, 8, 8), torch.randint(0, 10, (6,))
    loss = module.training_step((images, targets), 0)
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in module.loss_terms["fitnet"].regressor.parameters()
               if p.ndim > 1)
    assert module.loss_terms["feature_distance"].adapter.weight.grad.abs().sum() > 0
    assert module.student.stages[0][0].weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in module.teacher.parameters())
    optimizer = module.configure_optimizers()
    optimized = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert all(id(p) in optimized for p in module.loss_terms.parameters())
    assert not any(id(p) in optimized for p in module.teacher.parameters())


def test_hint_only_stage_trains_the_hint_terms_alone():
    module = module_with({"fitnet": {"weight": 1.0, "student_layer": "@1", "teacher_layer": "@1",
                                     "hint_only_epochs": 2}, "kd": {"weight": 1.0}})
    assert list(module.active_terms()) == ["fitnet"]  # epoch 0, no trainer yet


def read_csv_metrics(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "csv" / "metrics.csv") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.parametrize("preset", PRESETS)
def test_every_preset_trains_on_digits_and_logs_its_terms(make_cfg, preset):
    cfg = make_cfg(f"loss={preset}", "trainer.max_epochs=1", "trainer.limit_train_batches=3",
                   "trainer.limit_val_batches=1", "trainer.limit_test_batches=1", "teacher.train.max_epochs=1",
                   "report.enabled=false", shared_cache=True)
    run(cfg)
    rows = read_csv_metrics(Path(cfg.paths.output_dir))
    logged = {key for row in rows for key, value in row.items() if value}
    # Presets with an initialisation stage (AB, FT: 30 epochs) train only its terms in this one epoch.
    terms = build_loss_terms(to_dict(cfg.loss))
    staged = [name for name, term in terms.items() if term.hint_only_epochs > 0]
    for term in staged or list(cfg.loss):
        assert f"train/loss/{term}" in logged, (term, sorted(logged))
    assert "train/loss_epoch" in logged


def test_adapters_are_checkpointed_but_not_exported(make_cfg):
    cfg = make_cfg("loss=fitnet", "trainer.max_epochs=1", "trainer.limit_train_batches=2", "teacher.train.max_epochs=1")
    run(cfg)
    run_dir = Path(cfg.paths.output_dir)
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert any(key.startswith("loss_terms.fitnet.regressor.") for key in checkpoint["state_dict"])
    exported = load_file(str(run_dir / "student.safetensors"))
    assert not any("regressor" in key for key in exported)
    assert set(exported) == {k.removeprefix("student.") for k in checkpoint["state_dict"] if k.startswith("student.")}


def test_fitnet_warmup_stage_runs_hint_alone_first(make_cfg):
    cfg = make_cfg("loss=fitnet", "+loss.kd.weight=0.5", "loss.fitnet.hint_only_epochs=1", "trainer.max_epochs=2",
                   "trainer.limit_train_batches=2", "teacher.train.max_epochs=1")
    run(cfg)
    by_epoch = {}
    for row in read_csv_metrics(Path(cfg.paths.output_dir)):
        if row.get("train/loss/fitnet"):
            by_epoch[int(row["epoch"])] = row
    assert not by_epoch[0].get("train/loss/kd") and not by_epoch[0].get("train/loss/ce")
    assert by_epoch[1]["train/loss/kd"] and by_epoch[1]["train/loss/ce"]


def test_channels_last_gives_the_same_loss():
    images, targets = torch.randn(6, 1, 8, 8), torch.randint(0, 10, (6,))
    losses = []
    for channels_last in (False, True):
        torch.manual_seed(0)
        student, teacher = pair()
        module = DistillationModule(student, build_loss_terms({"ce": {"weight": 0.5}, "kd": {"weight": 0.5}}),
                                    lambda params: torch.optim.SGD(params, lr=0.1), 10, (1, 8, 8), teacher=teacher,
                                    channels_last=channels_last)
        losses.append(module.training_step((images, targets), 0).item())
        if channels_last:
            assert module.student.stages[0][0].weight.is_contiguous(memory_format=torch.channels_last)
    assert losses[1] == pytest.approx(losses[0], rel=1e-5)
