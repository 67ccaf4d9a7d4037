"""Our architectures through timm's registry, and the checks around model creation and weights."""

import pytest
import timm
import torch
from safetensors.torch import save_file

import students  # noqa: F401
from distill.errors import ConfigError
from distill.models import check_input_fits, create_model, load_weights


@pytest.mark.parametrize(
    ("name", "params"),
    # CRD's resnet8x4 / resnet32x4 with 100 classes and 3 input channels: 1.23 M and 7.43 M parameters.
    [("cifar_resnet8x4", 1_233_540), ("cifar_resnet32x4", 7_433_860), ("cifar_resnet20", 278_324),
     ("cifar_resnet56", 861_620)],
)
def test_cifar_resnets_match_the_crd_benchmark_sizes(name, params):
    model = timm.create_model(name, num_classes=100)
    assert sum(p.numel() for p in model.parameters()) == params
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 100)


def test_hinton_mlps_have_the_paper_widths():
    teacher = timm.create_model("hinton_mlp_teacher", num_classes=10, in_chans=1, img_size=28)
    student = timm.create_model("hinton_mlp_student", num_classes=10, in_chans=1, img_size=28, hidden=30)
    assert teacher.fc1.out_features == 1200 and teacher.fc2.out_features == 1200 and teacher.drop1.p == 0.5
    assert student.fc1.out_features == 30
    # 784*1200 + 1200 + 1200*1200 + 1200 + 1200*10 + 10
    assert sum(p.numel() for p in teacher.parameters()) == 2_395_210
    assert teacher(torch.zeros(3, 1, 28, 28)).shape == (3, 10)


def test_small_cnn_feature_info_names_real_modules():
    model = timm.create_model("small_cnn", num_classes=10, in_chans=1, width=4)
    names = dict(model.named_modules())
    assert [info["module"] for info in model.feature_info] == ["stages.0", "stages.1", "stages.2"]
    assert all(info["module"] in names for info in model.feature_info)


def test_unknown_model_suggests_close_names():
    with pytest.raises(ConfigError, match=r"unknown student model 'cifar_resnet8x5'.*did you mean.*cifar_resnet8x4"):
        create_model("cifar_resnet8x5", 10, 1, role="student")


def test_channels_that_contradict_the_data_are_rejected():
    with pytest.raises(ConfigError, match=r"in_chans=3 but the data has in_chans=1"):
        create_model("small_cnn", 10, 1, {"in_chans": 3}, role="student")


def test_model_that_cannot_take_the_input_size_fails_the_dry_run():
    model = create_model("hinton_mlp_student", 10, 1, {"img_size": 28})
    with pytest.raises(ConfigError, match=r"cannot take inputs of shape \(1, 8, 8\).*img_size"):
        check_input_fits(model, (1, 8, 8), "student", "hinton_mlp_student")


def test_weights_load_strictly_and_errors_name_the_problem(tmp_path):
    source = create_model("small_cnn", 10, 1, {"width": 4})
    good = tmp_path / "good.safetensors"
    save_file(source.state_dict(), str(good))
    target = create_model("small_cnn", 10, 1, {"width": 4})
    load_weights(target, good)
    assert all(torch.equal(a, b) for a, b in zip(source.state_dict().values(), target.state_dict().values()))

    with pytest.raises(ConfigError, match="weights file not found"):
        load_weights(target, tmp_path / "missing.safetensors")

    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(b"not a checkpoint at all")
    with pytest.raises(ConfigError, match="cannot read weights .* corrupt"):
        load_weights(target, corrupt)

    with pytest.raises(ConfigError, match="another number of classes"):
        load_weights(create_model("small_cnn", 7, 1, {"width": 4}), good)


class Payload:
    """Any class: unpickling it would run import-time code from the file's author."""


def test_pickled_objects_are_refused(tmp_path):
    path = tmp_path / "pickled.pth"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "payload": Payload()}, path)
    with pytest.raises(ConfigError, match="cannot read weights"):
        load_weights(create_model("small_cnn", 10, 1, {"width": 4}), path)
