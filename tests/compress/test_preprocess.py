"""What the ONNX files carry for their users: the data's preprocessing and class names as metadata, and with
``compress.onnx.preprocess=true`` the scaling and normalisation in the graph (pixel values in), int8 included."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch

from distill.compress import onnx_io, ort_runtime
from distill.compress.cli import compress_run
from distill.compress.onnx_io import export_checked, export_onnx, read_usage
from distill.compress.settings import check_settings
from distill.errors import ConfigError
from distill.export import model_usage
from distill.measure import accuracy
from tests.compress.test_pipeline import fake_run
from tests.helpers.compress import compress_settings, default_student, digits_data


@pytest.fixture(scope="module")
def digits():
    return digits_data()


def trained_student(digits) -> torch.nn.Module:
    """The default student after a few seconds of training, so that int8's accuracy has something to keep."""
    student = default_student().train()
    optimizer = torch.optim.Adam(student.parameters(), lr=1e-2)
    images, labels = digits.splits["train"].images, digits.splits["train"].labels
    generator = torch.Generator().manual_seed(0)
    for _ in range(6):
        for batch in torch.randperm(len(labels), generator=generator).split(128):
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(student(images[batch]), labels[batch]).backward()
            optimizer.step()
    return student.eval()


def raw_test_pixels(digits) -> np.ndarray:
    """The test split's images as the dataset stores them (0..16), not recovered from the normalised tensors."""
    return digits.load_raw()["test"][0].astype(np.float32)


def test_an_export_records_the_preprocessing_and_classes_as_onnx_metadata(digits, tmp_path):
    student = default_student()
    settings = compress_settings("int8").onnx
    check = export_checked(student, digits.input_shape, tmp_path / "s.onnx", digits.splits["test"].images[:64],
                           settings, "small_cnn", usage=model_usage(digits))
    assert check["input"] == "normalised images"
    props = {prop.key: prop.value for prop in onnx.load(str(tmp_path / "s.onnx")).metadata_props}
    assert sorted(props) == ["distill.classes", "distill.preprocessing"]
    assert json.loads(props["distill.classes"]) == [str(digit) for digit in range(10)]
    assert json.loads(props["distill.preprocessing"]) == digits.preprocessing()
    # Without usage (callers that pass none) the file has no model-level metadata at all, as before; a file made
    # by another tool (the QAT export) gets it afterwards.
    export_onnx(student, digits.input_shape, tmp_path / "bare.onnx")
    assert not onnx.load(str(tmp_path / "bare.onnx")).metadata_props and read_usage(tmp_path / "bare.onnx") == {}
    onnx_io.record_usage(tmp_path / "bare.onnx", model_usage(digits))
    assert read_usage(tmp_path / "bare.onnx") == model_usage(digits)
    assert (tmp_path / "bare.onnx").read_bytes() == (tmp_path / "s.onnx").read_bytes()  # and the same bytes


def test_preprocess_true_puts_the_normalisation_in_the_graph_and_matches_pytorch(digits, tmp_path):
    student = default_student()
    settings = compress_settings("int8", "compress.onnx.preprocess=true").onnx
    images = digits.splits["test"].images
    check = export_checked(student, digits.input_shape, tmp_path / "s.onnx", images, settings, "small_cnn",
                           usage=model_usage(digits))
    assert check["input"].startswith("pixel values") and check["max_abs_logit_diff"] < 1e-4
    assert check["top1_agreement"] == 1.0
    usage = read_usage(tmp_path / "s.onnx")
    assert usage["preprocessing"] == {**digits.preprocessing(), "in_graph": True}
    # Independently of the check: the dataset's own pixel values (0..16) in, PyTorch's logits on the normalised
    # images out; the normalised images themselves are not what this graph takes.
    session = ort_runtime.session(tmp_path / "s.onnx")
    with torch.no_grad():
        expected = student(images).numpy()
    np.testing.assert_allclose(ort_runtime.run_batches(session, raw_test_pixels(digits)), expected, atol=1e-4)
    assert np.abs(ort_runtime.run_batches(session, images.numpy()) - expected).max() > 1e-2
    # The students' graph is untouched: the normalisation is three nodes in front of it.
    ops = [node.op_type for node in onnx.load(str(tmp_path / "s.onnx")).graph.node]
    assert ops[:3] == ["Div", "Sub", "Div"] and ops.count("Div") == 2


def test_preprocess_true_int8_is_calibrated_on_pixel_values_and_keeps_the_accuracy(digits, tmp_path):
    student = trained_student(digits)
    pytorch = accuracy(student, digits.test_dataloader(), 10)["top1"]
    assert pytorch > 0.9
    run_dir = fake_run(tmp_path / "run", student)
    result = compress_run(run_dir, compress_settings("int8", "compress.onnx.preprocess=true"))
    details = {row["variant"]: row["details"] for row in result["variants"]}
    assert details["ONNX int8"]["quantization"]["calibration_input"] == "pixel values"
    assert details["ONNX fp32"]["export_check"]["input"].startswith("pixel values")
    for name in ("student.onnx", "student.int8.onnx"):
        path = run_dir / name
        assert read_usage(path)["preprocessing"]["in_graph"] is True and read_usage(path)["classes"][3] == "3"
        session = ort_runtime.session(path)
        # graph_batches feeds each file as it takes its input (the report's accuracy reads the test split so).
        top1 = ort_runtime.accuracy(session, onnx_io.graph_batches(path, digits.test_dataloader()), 10)["top1"]
        dataset_pixels = [(torch.from_numpy(raw_test_pixels(digits)), digits.splits["test"].labels)]
        assert top1 == ort_runtime.accuracy(session, dataset_pixels, 10)["top1"]
        assert abs(top1 - pytorch) <= (0 if name == "student.onnx" else 0.03)


def test_preprocess_takes_true_or_false_and_needs_a_description(digits, tmp_path):
    with pytest.raises(ConfigError, match=r"compress.onnx.preprocess=yes must be true or false"):
        check_settings(compress_settings("int8", "compress.onnx.preprocess=yes"))
    assert check_settings(compress_settings("int8", "compress.onnx.preprocess=true")) == ["onnx", "int8"]
    settings = compress_settings("int8", "compress.onnx.preprocess=true").onnx
    with pytest.raises(ConfigError, match=r"describe no preprocessing to put in the graph"):
        export_checked(default_student(), digits.input_shape, tmp_path / "s.onnx", digits.splits["test"].images[:8],
                       settings, "small_cnn")


def test_raw_pixels_gives_back_the_datasets_own_pixel_values(digits):
    # Whole numbers come back exactly (rounded): int8 quantises the input, and 7.9999995 could round to another step.
    pixels = onnx_io.raw_pixels(digits.splits["test"].images, digits.preprocessing())
    np.testing.assert_array_equal(pixels.numpy(), raw_test_pixels(digits))
