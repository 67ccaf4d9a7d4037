"""Pre-activation layers, AB and OFD (which read them), init stages and every new preset end to end."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import timm
import torch
import torch.nn.functional as F
from torch import nn
from torch.testing import assert_close

from distill.errors import ConfigError
from distill.feature_taps import FeatureTaps
from distill.losses import (
    ab_loss,
    activation_boundary_loss,
    build_loss_terms,
    ofd_loss,
    ofd_margin,
    ofd_partial_l2,
)
from distill.losses.maps import pool_to
from distill.models import create_model
from distill.runner import prepare, run
from tests.test_distill_features import read_csv_metrics
from tests.test_new_losses import DOUBLE, avg_pool_2x2, randn, scalar

# ---------------------------------------------------------------- AB


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


# ---------------------------------------------------------------- OFD


def normal_cdf(x: float) -> float:
    return 0.5 * (1 + math.erf(x / math.sqrt(2)))


def test_ofd_margin_is_the_expected_negative_part_of_the_bn_gaussian():
    gamma = torch.tensor([1.0, -2.0, 0.5, 0.1], dtype=DOUBLE)
    beta = torch.tensor([0.0, 1.0, -0.3, 1.0], dtype=DOUBLE)  # the last: Phi(-10) < 0.001, so -3 s
    expected = []
    for g, b in zip(gamma.tolist(), beta.tolist()):
        s = abs(g)
        below = normal_cdf(-b / s)
        density = math.exp(-((b / s) ** 2) / 2) / math.sqrt(2 * math.pi)
        expected.append(-s * density / below + b if below > 0.001 else -3 * s)
    assert_close(ofd_margin(gamma, beta), torch.tensor(expected, dtype=torch.float32))
    # Monte Carlo check of the formula for one channel: the mean of N(1, 2^2) below zero.
    samples = torch.randn(2_000_000, generator=torch.Generator().manual_seed(0), dtype=DOUBLE) * 2.0 + 1.0
    assert abs(samples[samples < 0].mean().item() - expected[1]) < 0.01


def hand_partial_l2(student: torch.Tensor, teacher: torch.Tensor, margin: list[float]) -> float:
    total = 0.0
    for n in range(student.shape[0]):
        for c in range(student.shape[1]):
            m = margin[c]
            for s, t in zip(student[n, c].flatten().tolist(), teacher[n, c].flatten().tolist()):
                if s > m and t <= m:
                    total += (s - m) ** 2
                if s > t and m < t <= 0:
                    total += (s - t) ** 2
                if t > 0:
                    total += (s - t) ** 2
    return total / student.shape[0]


def test_ofd_partial_l2_and_layer_weights_by_loops():
    margin = torch.tensor([-0.8, -0.2, -1.5])
    students = [randn(2, 3, 2, 2, seed=31), randn(2, 3, 1, 1, seed=32)]
    teachers = [randn(2, 3, 4, 4, seed=33), randn(2, 3, 1, 1, seed=34)]
    assert_close(ofd_partial_l2(students[1], teachers[1], margin),
                 scalar(hand_partial_l2(students[1], teachers[1], margin.tolist())))
    # The teacher's map is pooled to the student's size; the shallower layer weighs 1/2.
    expected = (hand_partial_l2(students[0], avg_pool_2x2(teachers[0]), margin.tolist()) / 2
                + hand_partial_l2(students[1], teachers[1], margin.tolist()))
    assert_close(ofd_loss(students, teachers, [margin, margin]), scalar(expected))


def test_ofd_skips_only_a_pool_that_would_be_the_identity():
    teacher = randn(4, 8, 7, 7, seed=35)
    assert pool_to(teacher, (7, 7)) is teacher
    assert torch.equal(F.adaptive_avg_pool2d(teacher, (7, 7)), teacher)  # what the skipped pool would have given
    assert_close(pool_to(teacher, (1, 1)), teacher.mean(dim=(2, 3), keepdim=True))


def test_ofd_reads_its_margins_from_the_teachers_batchnorm():
    teacher = create_model("cifar_resnet20", 10, 1)
    bn = teacher.layer2[-1].bn2
    with torch.no_grad():
        bn.weight.uniform_(0.5, 2.0)
        bn.bias.uniform_(-1.0, 1.0)
    (term,) = build_loss_terms({"ofd": {"weight": 1.0, "student_layers": ["@-2:pre_act"],
                                        "teacher_layers": ["@-2:pre_act"]}}).values()
    term.attach(None, teacher)
    assert_close(term.margins()[0], ofd_margin(bn.weight.detach(), bn.bias.detach()))
    assert "margin0" not in term.state_dict()  # derived from the teacher, which is not checkpointed


def test_ofd_needs_a_pre_act_teacher_layer_with_batchnorm():
    plain = nn.Sequential(nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU()))
    (term,) = build_loss_terms({"ofd": {"weight": 1.0, "student_layers": ["0:pre_act"],
                                        "teacher_layers": ["0:pre_act"]}}).values()
    with pytest.raises(ConfigError, match=r"teacher layer '0:pre_act' has no \(affine\) BatchNorm"):
        term.attach(None, plain)
    (term,) = build_loss_terms({"ofd": {"weight": 1.0, "student_layers": ["0"], "teacher_layers": ["0"]}}).values()
    with pytest.raises(ConfigError, match=r"pre-ReLU features, but teacher layer '0'.*use '0:pre_act'"):
        term.attach(None, plain)


# ---------------------------------------------------------------- configuration errors


def test_methods_that_compare_channels_name_the_layers_and_the_fix(make_cfg):
    with pytest.raises(ConfigError, match=r"loss.kdsvd needs equal channel counts.*student '@-3' has 8, teacher "
                                          r"'@-3' has 32.*student=cifar_resnet8"):
        prepare(make_cfg("loss=kdsvd"))
    with pytest.raises(ConfigError, match=r"loss.fsp needs equal channel counts.*student '@0' has 32, teacher '@0' "
                                          r"has 16"):
        prepare(make_cfg("loss=fsp", "teacher=cifar_resnet20", "student=cifar_resnet8x4"))


def test_an_init_stage_term_needs_an_init_stage():
    with pytest.raises(ConfigError, match=r"loss.ab with hint_only_epochs=0 and main_stage=false is never trained"):
        build_loss_terms({"ab": {"weight": 1.0, "student_layers": ["a"], "teacher_layers": ["a"],
                                 "hint_only_epochs": 0}})
    with pytest.raises(ConfigError, match=r"loss.fsp needs as many student_layers as teacher_layers \(at least 2\)"):
        build_loss_terms({"fsp": {"weight": 1.0, "student_layers": ["a"], "teacher_layers": ["a"]}})


# ---------------------------------------------------------------- pre-activation layers


def randomize_batchnorm(model: nn.Module) -> nn.Module:
    """Non-trivial BatchNorm statistics and affine parameters, so pre-activations have both signs."""
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                for tensor, low, high in ((module.weight, 0.5, 1.5), (module.bias, -1.0, 1.0),
                                          (module.running_mean, -0.5, 0.5), (module.running_var, 0.5, 2.0)):
                    tensor.copy_(torch.rand(tensor.shape, generator=generator, dtype=tensor.dtype) * (high - low) + low)
    return model.eval()


def test_pre_act_of_a_cifar_resnet_stage_is_bn2_plus_shortcut_of_its_last_block():
    model = randomize_batchnorm(create_model("cifar_resnet20", 10, 1).double())
    images = randn(2, 1, 8, 8, seed=40)
    plain_logits = model(images)
    taps = FeatureTaps(model, ["layer2:pre_act", "layer2", "@-1:pre_act"], "student")
    assert_close(model(images), plain_logits)  # the hooks copy, they do not change the forward pass
    features = taps.pop()
    with torch.no_grad():
        hidden = model.layer1(torch.relu(model.bn1(model.conv1(images))))
        for block in model.layer2[:-1]:
            hidden = block(hidden)
        last = model.layer2[-1]
        expected = last.bn2(last.conv2(torch.relu(last.bn1(last.conv1(hidden))))) + hidden  # identity shortcut
    assert_close(features["layer2:pre_act"], expected)
    assert_close(features["layer2"], torch.relu(expected))
    assert (expected < 0).any() and (expected > 0).any()
    assert features["@-1:pre_act"].shape == (2, 64, 2, 2)


def test_pre_act_on_timm_resnet_and_on_a_plain_conv_bn_relu_stage():
    model = randomize_batchnorm(timm.create_model("resnet18", num_classes=10, in_chans=1).double())
    inputs = {}
    model.layer3[-1].register_forward_pre_hook(lambda module, args: inputs.update(block=args[0].clone()))
    taps = FeatureTaps(model, ["layer3:pre_act", "layer3"], "teacher")
    model(randn(2, 1, 32, 32, seed=41))
    features = taps.pop()
    block, hidden = model.layer3[-1], inputs["block"]
    with torch.no_grad():
        expected = block.bn2(block.conv2(torch.relu(block.bn1(block.conv1(hidden))))) + hidden
    assert_close(features["layer3:pre_act"], expected)
    assert_close(features["layer3"], torch.relu(expected))

    cnn = randomize_batchnorm(create_model("small_cnn", 10, 1, {"width": 4}).double())
    taps = FeatureTaps(cnn, ["stages.1:pre_act"], "student")
    images = randn(2, 1, 8, 8, seed=42)
    cnn(images)
    with torch.no_grad():
        expected = cnn.stages[1][1](cnn.stages[1][0](cnn.stages[0](images)))  # the BN output, before the ReLU
    assert_close(taps.pop()["stages.1:pre_act"], expected)


def test_pre_act_passes_gradients_to_the_student():
    model = create_model("cifar_resnet8", 10, 1)
    taps = FeatureTaps(model, ["layer2:pre_act"], "student")
    model(torch.randn(2, 1, 8, 8))
    taps.pop()["layer2:pre_act"].pow(2).sum().backward()
    assert model.layer2[-1].conv2.weight.grad.abs().sum() > 0
    assert model.layer3[0].conv1.weight.grad is None


def test_bad_pre_act_requests_name_the_layer():
    model = create_model("cifar_resnet8", 10, 1)
    with pytest.raises(ConfigError, match=r"student layer 'layer2:post_act': unknown option ':post_act'"):
        FeatureTaps(model, ["layer2:post_act"], "student")
    with pytest.raises(ConfigError, match=r"student layer 'fc:pre_act': 'fc' ends in no block with an activation"):
        FeatureTaps(model, ["fc:pre_act"], "student")


def test_distill_layers_lists_pre_activations_with_their_alias_and_shape():
    from distill.layer_table import format_layers

    table = format_layers("student", "cifar_resnet8", create_model("cifar_resnet8", 10, 1), (1, 8, 8))
    row = next(line for line in table.splitlines() if line.split()[0] == "layer2:pre_act")
    assert row.split()[1:3] == ["@2:pre_act", "pre-activation"] and "(32, 4, 4)" in row


# ---------------------------------------------------------------- init stages and presets end to end


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


# FSP and KDSVD compare channels one to one, so they need a pair of equal widths: resnet20 -> resnet8 has the
# four feature_info stages of FSP's preset (as resnet32x4 -> resnet8x4); KDSVD's three stages fit small CNNs.
@pytest.mark.parametrize(("preset", "extra"), [("ab", ()), ("fsp", ("teacher=cifar_resnet20", "student=cifar_resnet8")),
                                               ("kdsvd", ("teacher.kwargs.width=8",)), ("ft", ())])
def test_presets_with_init_stages_or_equal_widths_run_end_to_end(make_cfg, preset, extra):
    cfg = make_cfg(f"loss={preset}", "trainer.fast_dev_run=true", "teacher.train.max_epochs=1", *extra,
                   shared_cache=True)
    run(cfg)
    assert (Path(cfg.paths.output_dir) / "student.safetensors").is_file()


# ---------------------------------------------------------------- FT (an init stage of its own kind)


def test_factor_transfer_loss_by_loops():
    from distill.losses import factor_transfer_loss

    student, teacher = randn(2, 3, 2, 2, seed=50), randn(2, 4, 2, 2, seed=51)

    def factor(feature):
        rows = [[sum(feature[n, c, y, x].item() ** 2 for c in range(feature.shape[1])) / feature.shape[1]
                 for y in range(2) for x in range(2)] for n in range(2)]
        return [[v / math.sqrt(sum(u * u for u in row)) for v in row] for row in rows]

    f_s, f_t = factor(student), factor(teacher)
    expected = sum(abs(a - b) for rs, rt in zip(f_s, f_t) for a, b in zip(rs, rt)) / 8
    assert_close(factor_transfer_loss(student, teacher), scalar(expected))


def test_ft_trains_the_paraphraser_alone_then_the_translator_on_frozen_factors():
    from distill.losses import DistillBatch

    (term,) = build_loss_terms({"ft": {"hint_only_epochs": 2}}).values()
    term.build({"@-1": torch.zeros(2, 3, 2, 2)}, {"@-1": torch.zeros(2, 8, 2, 2)})
    term.double()
    encoder = [m for m in term.paraphraser.encoder if isinstance(m, nn.Conv2d)]
    assert [(m.in_channels, m.out_channels) for m in encoder] == [(8, 8), (8, 4), (4, 4)]
    assert [type(m).__name__ for m in term.translator][:3] == ["Conv2d", "BatchNorm2d", "LeakyReLU"]
    student = randn(2, 3, 2, 2, seed=52).requires_grad_()
    teacher = randn(2, 8, 2, 2, seed=53)
    batch = DistillBatch(torch.tensor([0, 1]), torch.zeros(2, 3), torch.zeros(2, 3), {"@-1": student},
                         {"@-1": teacher}, epoch=1)
    value = term(batch)
    assert_close(value, 0.2 / 200 * F.mse_loss(term.paraphraser(teacher), teacher))
    value.backward()
    assert student.grad is None and all(p.grad is not None for p in term.paraphraser.parameters())
    term.zero_grad(set_to_none=True)
    batch.epoch = 2
    value = term(batch)
    assert_close(value, factor_transfer_loss_of(term, student, teacher))
    value.backward()
    assert student.grad.abs().sum() > 0 and all(p.grad is None for p in term.paraphraser.parameters())


def factor_transfer_loss_of(term, student, teacher):
    from distill.losses import factor_transfer_loss

    return factor_transfer_loss(term.translator(student), term.paraphraser.encoder(teacher).detach())
