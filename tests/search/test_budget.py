"""The budget's measurements: an untrained network quantises like a trained one, measurements are cached, and a
candidate the runtime cannot take fails its trial without stopping the search (until too many do)."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from distill.errors import ConfigError
from distill.search import budget
from distill.search.run import search
from distill.search.space import Candidate
from tests.helpers.compress import digits_data

INT8 = OmegaConf.create({"runtime": "onnx_int8", "threads": 1, "repeats": 3, "warmup": 1,
                         "int8": {"calibration_images": 16, "calibration_batch_size": 8, "calibrate_method": "minmax",
                                  "format": "qdq", "per_channel": True, "reduce_range": False, "seed": 0}})


@pytest.fixture(scope="module")
def digits():
    return digits_data()


def test_untrained_networks_are_measured_in_int8_and_the_measurement_is_cached(digits, tmp_path, monkeypatch):
    # Untrained, a CIFAR ResNet's zero biases and BN shifts are identical tensors that the export stores once;
    # onnxruntime's quantiser then writes a file it cannot load. budget.distinct_values gives them random values.
    resnet = budget.measure(Candidate.of("cifar_resnet", {"depth": 8, "width": 2}), digits, INT8, tmp_path)
    assert resnet["bytes"] > 0 and resnet["latency_ms"] > 0
    mlp = Candidate.of("hinton_mlp_student", {"hidden": 64, "img_size": 8})
    first = budget.measure(mlp, digits, INT8, tmp_path)
    assert first["macs"] == 8 * 8 * 64 + 64 * 64 + 64 * 10  # its three linear layers, by hand

    def never(*args, **kwargs):
        raise AssertionError("measured again")

    monkeypatch.setattr(budget, "create_model", never)
    assert budget.measure(mlp, digits, INT8, tmp_path) == first


def test_a_candidate_that_cannot_be_measured_fails_its_trial_and_too_many_stop_the_search(make_search_cfg,
                                                                                           monkeypatch):
    real = budget.measure

    def failing(candidate, *args, **kwargs):
        if candidate.label == "small_cnn(width=6)":
            raise RuntimeError("the quantiser gave up")
        return real(candidate, *args, **kwargs)

    monkeypatch.setattr(budget, "measure", failing)
    cfg = make_search_cfg("search.trials=1", space="{small_cnn: {width: [6]}}")
    with pytest.raises(ConfigError, match="3 trials ran and only 0 finished"):
        search(cfg, Path(cfg.paths.output_dir))
    import optuna

    study = optuna.load_study(study_name="distill-search", storage=f"sqlite:///{cfg.paths.output_dir}/study.db")
    assert [t.state.name for t in study.trials] == ["FAIL"] * 3
    assert study.trials[0].user_attrs["error"] == "RuntimeError: the quantiser gave up"
