"""int8 files (distill/compress): calibration on training images only, what a saved ONNX file holds, the
QOperator format, and quantisation-aware training with torchao's PT2E flow."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from distill.compress import ort_runtime
from distill.compress.onnx_io import export_onnx
from distill.compress.quantize import TrainingImagesReader, quantize_int8, training_images
from distill.models import create_model
from tests.helpers.compress import FAST_RUNTIME, compress_settings, default_student, digits_data


@pytest.fixture(scope="module")
def digits():
    return digits_data()


def test_int8_calibration_reads_training_images_only(digits, tmp_path):
    student = default_student()
    settings = compress_settings("int8", "compress.int8.calibration_images=96")
    export_onnx(student, digits.input_shape, tmp_path / "student.onnx")
    reader = TrainingImagesReader(training_images(digits, 96), batch_size=32)
    info = quantize_int8(tmp_path / "student.onnx", tmp_path / "student.int8.onnx", reader, settings.int8)

    seen = np.concatenate(reader.yielded)  # every image onnxruntime's calibrator was handed
    assert seen.shape == (96, 1, 8, 8) and info["calibration_images"] == 96 and info["calibration_split"] == "train"
    rows = {split: {image.tobytes() for image in digits.splits[split].images.numpy()} for split in digits.splits}
    seen_rows = {image.tobytes() for image in seen}
    assert len(seen_rows) == 96 and seen_rows <= rows["train"]
    # Digits has a few duplicate images across splits; none of them may come from val or test by choice.
    assert not seen_rows & (rows["test"] - rows["train"]) and not seen_rows & (rows["val"] - rows["train"])

    session = ort_runtime.session(tmp_path / "student.int8.onnx")
    op_types = {node.op_type for node in __import__("onnx").load(str(tmp_path / "student.int8.onnx")).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= op_types
    assert ort_runtime.accuracy(session, digits.test_dataloader(), 10)["samples"] == 360


def test_a_saved_onnx_file_holds_each_constant_once_and_only_the_opsets_it_uses(tmp_path):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from distill.compress.onnx_io import save_onnx

    zero = np.zeros((), np.uint8)
    graph = helper.make_graph(
        [helper.make_node("QuantizeLinear", ["images", "scale_a", "zero_a"], ["q"]),
         helper.make_node("DequantizeLinear", ["q", "scale_b", "zero_b"], ["logits"])], "g",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [None, 4])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [None, 4])],
        [numpy_helper.from_array(np.array(0.5, np.float32), "scale_a"), numpy_helper.from_array(zero, "zero_a"),
         numpy_helper.from_array(np.array(0.5, np.float32), "scale_b"), numpy_helper.from_array(zero, "zero_b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(
        "com.microsoft.nchwc", 1), helper.make_opsetid("ai.onnx.training", 1)])
    save_onnx(model, tmp_path / "m.onnx")

    saved = onnx.load(str(tmp_path / "m.onnx"))
    assert len(saved.graph.initializer) == 2  # one scale, one zero point, each read by both nodes
    assert [opset.domain for opset in saved.opset_import] == [""]
    images = np.array([[0.2, 1.0, -3.0, 7.4]], np.float32)
    got = ort_runtime.run_batches(ort_runtime.session(tmp_path / "m.onnx"), images)
    np.testing.assert_allclose(got, np.clip(np.round(images / 0.5), 0, 255) * 0.5)


def test_int8_qoperator_file_is_smaller_than_qdq_and_computes_the_same_classes(digits, tmp_path):
    student = default_student()
    export_onnx(student, digits.input_shape, tmp_path / "student.onnx")
    images = training_images(digits, 64)
    sizes, logits = {}, {}
    for fmt in ("qdq", "qoperator"):
        settings = compress_settings("int8", f"compress.int8.format={fmt}").int8
        info = quantize_int8(tmp_path / "student.onnx", tmp_path / f"{fmt}.onnx", TrainingImagesReader(images),
                             settings)
        assert info["format"].lower().startswith(fmt)
        sizes[fmt] = (tmp_path / f"{fmt}.onnx").stat().st_size
        logits[fmt] = ort_runtime.run_batches(ort_runtime.session(tmp_path / f"{fmt}.onnx"),
                                              digits.splits["test"].images.numpy())
    import onnx

    op_types = {node.op_type for node in onnx.load(str(tmp_path / "qoperator.onnx")).graph.node}
    assert "QLinearConv" in op_types and "DequantizeLinear" in op_types  # integer ops, float logits out
    assert sizes["qoperator"] < 0.92 * sizes["qdq"]  # no weight/bias DequantizeLinear nodes, no bias scales
    # The same calibration and rounding: the two files classify (almost) every test image the same way.
    assert (logits["qdq"].argmax(1) == logits["qoperator"].argmax(1)).mean() >= 0.99


def test_a_compression_step_that_fails_fails_the_run_and_keeps_what_was_made(make_cfg, monkeypatch):
    import dataclasses

    from distill.compress.step import STEPS
    from distill.errors import CompressionFailed
    from distill.runner import run

    def broken_qat(workspace):
        raise RuntimeError("the exporter gave up")

    monkeypatch.setitem(STEPS, "qat", dataclasses.replace(STEPS["qat"], run=broken_qat))
    cfg = make_cfg("compress=qat", *FAST_RUNTIME)
    with pytest.raises(CompressionFailed, match="compression step 'qat' failed: RuntimeError: the exporter gave up"):
        run(cfg)
    run_dir = Path(cfg.paths.output_dir)
    compress = json.loads((run_dir / "compress.json").read_text())
    assert [f["step"] for f in compress["failures"]] == ["qat"]
    assert "the exporter gave up" in compress["failures"][0]["traceback"]
    # What the steps before it made is kept and measured; the run itself is not "finished".
    assert [v["variant"] for v in compress["variants"]][:4] == ["PyTorch fp32", "ONNX fp32", "teacher ONNX fp32",
                                                                "ONNX int8"]
    assert (run_dir / "student.int8.onnx").is_file() and not (run_dir / "metrics.json").exists()
    assert "| QAT ONNX int8 | failed |" in (run_dir / "report.md").read_text()


def test_quantisation_aware_training_saves_an_int8_onnx_measured_in_onnxruntime(make_cfg):
    from distill.runner import run

    cfg = make_cfg("compress=qat", "compress.qat.epochs=1", *FAST_RUNTIME)
    run(cfg)
    run_dir = Path(cfg.paths.output_dir)
    compress = json.loads((run_dir / "compress.json").read_text())
    assert not compress["failures"], compress["failures"]
    qat_row = next(row for row in compress["variants"] if row["variant"] == "QAT ONNX int8")
    assert qat_row["runtime"] == "onnxruntime" and qat_row["accuracy"]["samples"] == 360
    import onnx

    assert "DequantizeLinear" in {node.op_type for node in onnx.load(str(run_dir / "qat.int8.onnx")).graph.node}


@pytest.mark.slow  # 13 s, most of it importing torchao and torch.export's tracing
def test_qat_prepares_a_resnet_whose_relu_module_is_used_twice():
    from distill.compress.qat import calibrate, prepare_qat

    model = create_model("cifar_resnet8", 10, 1).eval()  # BasicBlock calls self.relu twice
    prepared = prepare_qat(model, (1, 8, 8))
    calibrate(prepared, torch.randn(8, 1, 8, 8), batch_size=4)
    prepared.eval()
    assert prepared(torch.randn(3, 1, 8, 8)).shape == (3, 10)
    assert any("FakeQuantize" in type(m).__name__ for m in prepared.modules())


@pytest.mark.slow  # 10 s: torchao's import and torch.export
def test_a_qat_student_follows_its_training_flag_even_when_a_trainer_sets_it_directly(digits):
    from distill.compress.qat import calibrate, prepare_qat

    prepared = prepare_qat(default_student(), digits.input_shape)
    calibrate(prepared, training_images(digits, 64))
    images = digits.splits["val"].images[:64] * 3  # wider than anything calibration saw

    def batch_norm_training() -> list[bool]:
        return [node.args[5] for node in prepared.graph.graph.nodes if "batch_norm" in str(node.target)]

    def scales() -> list[torch.Tensor]:
        return [buffer.clone() for name, buffer in prepared.named_buffers() if name.endswith("scale")]

    calibrated = scales()
    prepared.eval()
    with torch.no_grad():
        prepared(images)
    assert batch_norm_training() and not any(batch_norm_training())
    assert all(torch.equal(a, b) for a, b in zip(calibrated, scales()))  # evaluation never moves the ranges
    for module in prepared.modules():  # how Lightning's evaluation loop hands the model back to training
        module.training = True
    with torch.no_grad():
        prepared(images)
    assert all(batch_norm_training())  # batch statistics again, not the running ones
    assert any(not torch.equal(a, b) for a, b in zip(calibrated, scales()))  # and the observers observe
    # Without its fake quantisers the graph now trains exactly as the float student (no dropout of p=0.5 added).
    from torchao.quantization.pt2e import disable_fake_quant, disable_observer

    prepared.graph.apply(disable_fake_quant)
    prepared.graph.apply(disable_observer)
    with torch.no_grad():
        torch.testing.assert_close(prepared(images), default_student().train()(images), atol=1e-4, rtol=1e-4)
