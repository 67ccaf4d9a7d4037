"""The compression-step registry: the running order and the report's rows follow from what steps declare."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from distill.compress import settings as compress_settings
from distill.compress import step as step_module
from distill.compress.step import STEPS, CompressionStep, register_step, row_order, running_order
from distill.errors import ConfigError


def nothing(*_args) -> None:
    return None


@pytest.fixture
def steps(monkeypatch):
    """A copy of the registry for the test: steps registered here do not leak into other tests."""
    registry = dict(STEPS)
    monkeypatch.setattr(step_module, "STEPS", registry)
    monkeypatch.setattr(compress_settings, "STEPS", registry)
    return registry


def test_the_built_in_steps_run_and_report_in_their_declared_order():
    assert running_order(["qat", "prune", "int8"]) == ["onnx", "int8", "prune", "qat"]
    assert running_order(["prune"]) == ["onnx", "prune"]  # what a step needs is added
    assert row_order() == ["PyTorch fp32", "ONNX fp32", "teacher ONNX fp32", "ONNX int8", "pruned PyTorch fp32",
                           "pruned ONNX fp32", "pruned ONNX int8", "QAT ONNX int8"]


def test_a_new_step_takes_its_place_from_what_it_needs(steps):
    # A conversion that reads the int8 file (e.g. a runtime-specific recompile) and a step that makes a network.
    register_step(CompressionStep("compile", rows=("compiled int8",), check=nothing, run=nothing,
                                  needs=("int8",), convert=nothing))
    register_step(CompressionStep("distil_more", rows=("tuned PyTorch fp32",), check=nothing, run=nothing,
                                  model_label="tuned"))
    assert running_order(["distil_more", "compile"]) == ["onnx", "int8", "compile", "distil_more"]
    rows = row_order()
    assert rows.index("compiled int8") == rows.index("ONNX int8") + 1
    assert rows[rows.index("tuned PyTorch fp32"):rows.index("tuned PyTorch fp32") + 4] == [
        "tuned PyTorch fp32", "tuned ONNX fp32", "tuned ONNX int8", "tuned compiled int8"]
    with pytest.raises(ValueError, match="registered twice"):
        register_step(CompressionStep("compile", rows=(), check=nothing, run=nothing))


def test_steps_that_need_each_other_in_a_circle_are_refused(steps):
    register_step(CompressionStep("a", rows=(), check=nothing, run=nothing, needs=("b",)))
    register_step(CompressionStep("b", rows=(), check=nothing, run=nothing, needs=("a",)))
    with pytest.raises(ValueError, match="circle"):
        running_order(["a"])


def test_a_step_without_its_settings_names_its_preset():
    settings = OmegaConf.create({"steps": ["prune"], "onnx": {"exporter": "torchscript", "opset": 17,
                                                               "check_images": 8, "tolerance": 1e-3}})
    with pytest.raises(ConfigError, match=r"compress.prune has no settings; start from its preset \(compress=prune\)"):
        compress_settings.check_settings(settings)
