"""Bad input fails in ``prepare`` (before any training) with one message naming the value and the fix."""

import pytest
from safetensors.torch import save_file

from distill.data import DatasetNotFoundError
from distill.errors import ConfigError
from distill.models import create_model
from distill.runner import prepare


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["student.name=resnet8x4"], r"unknown student model 'resnet8x4'.*did you mean.*cifar_resnet8x4"),
        (["teacher.name=resnett18"], r"unknown teacher model 'resnett18'.*resnet18"),
        (["teacher.weights=/no/such/teacher.safetensors"], r"weights file not found: /no/such/teacher.safetensors"),
        (["+student.kwargs.in_chans=3"], r"in_chans=3 but the data has in_chans=1"),
        (["student=hinton_mlp_student", "student.kwargs.img_size=28"], r"cannot take inputs of shape \(1, 8, 8\)"),
        (["ckpt_path=/no/such/last.ckpt"], r"ckpt_path=/no/such/last.ckpt does not exist"),
        (["+loss.fitnett.weight=1"], r"unknown loss 'fitnett'.*available:"),
        (["stage=baseline"], r"stage='baseline' is not a valid choice; expected one of distill, teacher, student"),
    ],
)
def test_bad_config_values_fail_before_training(make_cfg, overrides, message):
    with pytest.raises(ConfigError, match=message):
        prepare(make_cfg(*overrides))


def test_missing_dataset_names_the_install_command(make_cfg, tmp_path):
    cfg = make_cfg("data=fashion_mnist", f"data.root={tmp_path / 'absent'}")
    with pytest.raises(DatasetNotFoundError, match="apt-get install -y dataset-fashion-mnist"):
        prepare(cfg)


def test_teacher_weights_for_another_number_of_classes(make_cfg, tmp_path):
    path = tmp_path / "teacher_100_classes.safetensors"
    save_file(create_model("small_cnn", 100, 1, {"width": 32}).state_dict(), str(path))
    with pytest.raises(ConfigError, match="another number of classes"):
        prepare(make_cfg(f"teacher.weights={path}"))


def test_corrupt_teacher_weights(make_cfg, tmp_path):
    path = tmp_path / "teacher.safetensors"
    path.write_bytes(b"\x00" * 64)
    with pytest.raises(ConfigError, match="cannot read weights"):
        prepare(make_cfg(f"teacher.weights={path}"))


def test_pretrained_teacher_without_network_says_how_to_fix(make_cfg, monkeypatch):
    # The hub is unreachable: fail at once instead of waiting for a network time-out.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    with pytest.raises(ConfigError, match=r"teacher 'resnet18': timm's pretrained weights .* HF_HUB_OFFLINE=1 "
                                          r".*teacher.pretrained=false .*teacher.weights="):
        prepare(make_cfg("teacher=timm", "teacher.name=resnet18", "teacher.kwargs={}"))
