"""Pre-activation feature taps (`<layer>:pre_act`), which any loss term may request: values, gradients, errors."""

from __future__ import annotations

import pytest
import timm
import torch
from torch import nn
from torch.testing import assert_close

from distill.errors import ConfigError
from distill.feature_taps import FeatureTaps
from distill.models import create_model
from tests.losses.helpers import randn


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
