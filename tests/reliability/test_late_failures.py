"""Errors that used to arrive after a teacher had trained, or when a loader reached a file, now come before
training (#31 item 10): a checkpoint of another model, image channels, split fractions, compress options;
images that cannot be decoded are named (or skipped on request)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from distill.data.image_folder import unreadable
from distill.errors import ConfigError
from distill.runner import prepare, run
from scripts.bad_inputs.image_folders import make_image_folder, truncated_png

ROOT = Path(__file__).resolve().parents[2]


def test_a_checkpoint_of_another_student_is_refused_before_the_teacher_trains(make_cfg, tmp_path):
    first = make_cfg("trainer.max_epochs=1", "report.enabled=false", run="first")
    run(first)
    last = Path(first.paths.output_dir) / "checkpoints" / "last.ckpt"
    wider = make_cfg("student.kwargs.width=16", f"ckpt_path={last}", run="second", shared_cache=True)
    with pytest.raises(ConfigError, match=r"ckpt_path=.*last.ckpt holds another model than this run's student "
                                          r"small_cnn \(.*of another shape .*\); give a checkpoint"):
        prepare(wider)
    assert not (Path(wider.paths.output_dir) / "teacher").exists()
    prepare(make_cfg(f"ckpt_path={last}", run="third"))  # its own architecture: accepted


@pytest.mark.parametrize("override, message", [
    ("data.val_fraction=0.002", r"data.val_fraction=0.002 holds out 3 of 1437 images, but both sides"),
    ("data.test_fraction=0.999", r"data.test_fraction=0.999 holds out 1795 of 1797 images"),
    ("compress=int8 compress.onnx.opset=99", "compress.onnx.opset=99 must be a whole number from 7 to 20"),
    ("compress=int8 compress.onnx.tolerance=0", "compress.onnx.tolerance=0 must be a number strictly greater"),
    ("compress=int8 compress.int8.per_channel=maybe", "compress.int8.per_channel=maybe must be true or false"),
    ("compress=int8 compress.runtime.repeats=0", "compress.runtime.repeats=0 must be a whole number >= 1"),
    ("compress=prune_int8 compress.prune.tolerance=2", "compress.prune.tolerance=2 must be a number strictly "
                                                       "between 0 and 1"),
    ("compress=qat compress.qat.lr=0", "compress.qat.lr=0 must be a number strictly greater than 0"),
])
def test_split_and_compress_extremes_are_refused_before_work(make_cfg, override, message):
    with pytest.raises(ConfigError, match=message):
        prepare(make_cfg(*override.split()))


def test_image_folders_take_one_or_three_channels(make_cfg, tmp_path):
    make_image_folder(tmp_path / "images")
    with pytest.raises(ConfigError, match=r"data.in_chans=2: image folders are read as grayscale"):
        prepare(make_cfg("data=image_folder", f"data.root={tmp_path / 'images'}", "data.in_chans=2"))


def test_an_image_beyond_the_decoders_size_limit_is_found_by_the_header_check(tmp_path, monkeypatch):
    from PIL import Image

    make_image_folder(tmp_path, per_class=1, splits=("train",))
    image = next((tmp_path / "train" / "cat").iterdir())
    assert unreadable(str(image)) is None
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 50)  # 12 x 10 pixels: more than twice the limit
    assert "decompression bomb" in unreadable(str(image))


IMAGE_RUN = ["data=image_folder", "data.image_size=16", "data.batch_size=4", "data.eval_batch_size=4",
             "data.num_workers=1", "teacher=small_cnn", "teacher.train.max_epochs=1", "student=small_cnn",
             "trainer.max_epochs=1", "logger=csv", "~callbacks.progress_bar", "trainer.enable_progress_bar=false",
             "report.enabled=false"]


@pytest.mark.parametrize("mode", ["error", "skip"])
def test_an_image_that_cannot_be_decoded_is_named_from_a_loader_worker(tmp_path, mode):
    make_image_folder(tmp_path / "images")
    bad = tmp_path / "images" / "train" / "dog" / "cut.png"
    truncated_png(bad)
    assert unreadable(str(bad)) is None  # the header check cannot see it
    result = subprocess.run([sys.executable, "-m", "distill.train", *IMAGE_RUN, f"data.root={tmp_path / 'images'}",
                             f"data.on_bad_image={mode}", f"hydra.run.dir={tmp_path / 'run'}",
                             f"paths.cache_dir={tmp_path / 'cache'}"], cwd=ROOT, capture_output=True, text=True,
                            timeout=300)
    output = result.stdout + result.stderr
    if mode == "error":
        assert result.returncode == 2, output[-3000:]
        errors = [line for line in output.splitlines() if "error: " in line]
        assert len(errors) == 1 and f"{bad} cannot be decoded" in errors[0] and "on_bad_image=skip" in errors[0]
        assert "Traceback" not in output
    else:
        assert result.returncode == 0, output[-3000:]
        assert f"data.on_bad_image=skip: {bad} cannot be decoded" in output
