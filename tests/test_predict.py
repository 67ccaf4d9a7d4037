"""Using an exported model outside distill: a plain onnxruntime script (it never imports distill) reads an ONNX
file's recorded preprocessing and class names and gets the run's reported accuracy from PNG files;
``distill-predict`` classifies a folder and writes a CSV, and refuses bad input with one line and exit code 2.

One tiny run (stage=student on digits, two epochs, compress=int8) is trained for the module.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from PIL import Image

from distill.compress.onnx_io import export_onnx
from distill.config import CONF_DIR
from distill.export import export_model, load_exported
from distill.predict import main, predict
from distill.runner import run
from scripts.bad_inputs.image_folders import truncated_png
from tests.conftest import FAST
from tests.helpers.compress import FAST_RUNTIME, digits_data

BIN = Path(sys.executable).parent  # the console scripts beside the interpreter of the venv running the tests
TEST_IMAGES = 360  # digits' test split

# What a user writes with the file and its metadata alone: numpy, PIL and onnxruntime, no distill.
PLAIN_ONNXRUNTIME = r"""
import json, sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
from PIL import Image

session = ort.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
metadata = session.get_modelmeta().custom_metadata_map
preprocessing = json.loads(metadata["distill.preprocessing"])
classes = json.loads(metadata["distill.classes"])
assert preprocessing["layout"] == "NCHW" and preprocessing["dtype"] == "float32"
assert preprocessing["resize"] is None and preprocessing["center_crop"] is None  # digits: 8x8 in, 8x8 used
mean = np.array(preprocessing["mean"], np.float32).reshape(-1, 1, 1)
std = np.array(preprocessing["std"], np.float32).reshape(-1, 1, 1)
files = sorted(Path(sys.argv[2]).rglob("*.png"))
inputs = []
for path in files:
    image = Image.open(path).convert("RGB")
    if preprocessing["channels"] == 1:
        image = image.convert("L")
    pixels = np.asarray(image, np.float32)
    pixels = pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)
    inputs.append(pixels if preprocessing["in_graph"] else (pixels / preprocessing["value_range"] - mean) / std)
logits = session.run(None, {session.get_inputs()[0].name: np.stack(inputs).astype(np.float32)})[0]
correct = sum(classes[index] == path.parent.name for index, path in zip(logits.argmax(1), files))
imported = sorted(name for name in sys.modules if name == "distill" or name.startswith("distill."))
print(json.dumps({"images": len(files), "accuracy": correct / len(files), "distill_modules": imported}))
"""


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("predict")
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=[*FAST, "stage=student", "compress=int8", *FAST_RUNTIME,
                                          f"paths.output_dir={root / 'run'}", f"paths.cache_dir={root / 'cache'}"])
    run(cfg)
    return root / "run"


@pytest.fixture(scope="module")
def digits():
    return digits_data()  # conf/data/digits.yaml: the run's data


@pytest.fixture(scope="module")
def digits_pngs(digits, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The test split as PNG files in one folder per class name. Digits' pixel values are whole numbers 0..16, stored
    as they are in 8-bit grayscale (lossless); the recorded preprocessing says value_range 16."""
    folder = tmp_path_factory.mktemp("digits_png")
    images, labels = digits.load_raw()["test"]
    classes = digits.class_names()
    for index, (image, label) in enumerate(zip(images, labels)):
        (folder / classes[label]).mkdir(exist_ok=True)
        Image.fromarray(image[0].astype(np.uint8)).save(folder / classes[label] / f"{index:03d}.png")
    return folder


def reported_top1(run_dir: Path, variant: str) -> float:
    rows = {row["variant"]: row for row in json.loads((run_dir / "report.json").read_text())["variants"]}
    assert rows[variant]["accuracy"]["samples"] == TEST_IMAGES
    return rows[variant]["accuracy"]["top1"]


@pytest.mark.parametrize(("file", "variant"), [("student.int8.onnx", "ONNX int8"), ("student.onnx", "ONNX fp32")])
def test_plain_onnxruntime_with_the_recorded_preprocessing_gets_the_reported_accuracy(trained_run, digits_pngs,
                                                                                      tmp_path, file, variant):
    done = subprocess.run([sys.executable, "-c", PLAIN_ONNXRUNTIME, str(trained_run / file), str(digits_pngs)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout)
    assert result["images"] == TEST_IMAGES and result["distill_modules"] == []
    # Within one image: the report ranks with argsort, the script with argmax, which may break an int8 tie apart.
    assert abs(result["accuracy"] - reported_top1(trained_run, variant)) <= 1 / TEST_IMAGES + 1e-9


def test_distill_predict_classifies_a_folder_and_writes_a_csv(trained_run, digits, digits_pngs, tmp_path, capsys):
    model, description = load_exported(trained_run / "student.json")
    # Exported with its data module, as the runner does (student.json then records preprocessing and classes).
    exported = export_model(model, description["architecture"], description["model_kwargs"], tmp_path / "export",
                            datamodule=digits)
    for model_path, variant in ((exported, "PyTorch fp32"), (trained_run / "student.int8.onnx", "ONNX int8")):
        out = tmp_path / f"{model_path.name}.csv"
        main([str(model_path), str(digits_pngs), "--out", str(out)])
        lines = capsys.readouterr().out.splitlines()
        with open(out, newline="") as handle:
            rows = list(csv.DictReader(handle))
        assert len(lines) == len(rows) == TEST_IMAGES
        for line, row in zip(lines, rows):
            path, name, probability = line.split("\t")
            assert (path, name) == (row["path"], row["class"]) and name == str(row["index"])
            assert float(probability) == pytest.approx(float(row["probability"]), abs=1e-4)
            assert 0.1 <= float(probability) <= 1
        top1 = np.mean([Path(row["path"]).parent.name == row["class"] for row in rows])
        assert abs(top1 - reported_top1(trained_run, variant)) <= 1 / TEST_IMAGES + 1e-9


def test_distill_predict_takes_single_files(trained_run, digits_pngs, capsys):
    files = [str(digits_pngs / "3" / name) for name in sorted(p.name for p in (digits_pngs / "3").iterdir())[:2]]
    rows = predict(trained_run / "student.onnx", files)
    assert [row["path"] for row in rows] == files and len(capsys.readouterr().out.splitlines()) == 2


def refusal(capsys, *args: str) -> str:
    with pytest.raises(SystemExit) as stopped:
        main(list(args))
    assert stopped.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == "" and len(captured.err.splitlines()) == 1 and captured.err.startswith("error: ")
    return captured.err


def test_distill_predict_refuses_bad_input_with_one_line_and_exit_code_2(trained_run, digits, digits_pngs, tmp_path,
                                                                         capsys):
    model = str(trained_run / "student.onnx")
    image = str(next((digits_pngs / "0").iterdir()))
    assert "no such model file" in refusal(capsys, str(tmp_path / "nope.onnx"), image)
    assert "is not an exported model" in refusal(capsys, image, image)
    assert "no such file or folder" in refusal(capsys, model, str(tmp_path / "missing.png"))
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no images here")
    assert "holds no image file" in refusal(capsys, model, str(tmp_path / "empty"))
    (tmp_path / "text.png").write_text("not an image at all")
    assert f"cannot read image {tmp_path / 'text.png'}" in refusal(capsys, model, str(tmp_path / "text.png"))
    truncated_png(tmp_path / "cut.png")  # the header reads; the pixels do not
    assert f"cannot read image {tmp_path / 'cut.png'}" in refusal(capsys, model, str(tmp_path / "cut.png"))
    Image.new("L", (10, 10)).save(tmp_path / "big.png")
    assert "is 10x10 pixels; the model takes 8x8" in refusal(capsys, model, str(tmp_path / "big.png"))
    assert "is a folder" in refusal(capsys, model, image, "--out", str(tmp_path))
    # Exports from before preprocessing was recorded: the .json and an ONNX file without metadata.
    student, description = load_exported(trained_run / "student.json")
    old_json = export_model(student, description["architecture"], description["model_kwargs"], tmp_path / "old")
    message = refusal(capsys, str(old_json), image)
    assert "records no preprocessing and no classes" in message and "distill-compress run=" in message
    old_onnx = export_onnx(student, digits.input_shape, tmp_path / "old" / "student.onnx")
    assert "records no preprocessing" in refusal(capsys, str(old_onnx), image)
    # The installed command: the same refusal, one line on stderr, exit code 2, no traceback, no CSV.
    done = subprocess.run([str(BIN / "distill-predict"), str(old_onnx), image, "--out", str(tmp_path / "p.csv")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and len(done.stderr.splitlines()) == 1 and "records no preprocessing" in done.stderr
    assert not (tmp_path / "p.csv").exists()
