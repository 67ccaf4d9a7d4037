"""Bad files, folders and runs for ``distill-train`` (the config values are in cases_values.py): each case
builds what it needs in a scratch folder and names the overrides that point the command at it.

Read by table.py (``python -m scripts.bad_inputs``), which runs every case through the real command for the table in
docs/reliability.md; the behaviour of each class is tested on its own in tests/ (test_data_identity,
test_late_failures, test_run_folder, test_teacher_resume, test_disk_full, test_integrity).
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scripts.bad_inputs.image_folders import make_image_folder, truncated_png

# A build gets the scratch folder and returns anything the case must keep alive while the command runs.
Build = Callable[[Path], Any]


@dataclass
class InputCase:
    id: str
    args: list[str]  # "{scratch}" stands for the case's scratch folder
    message: str  # a part of the one line the command must answer with
    build: Build | None = None
    exit_code: int = 2  # a refusal; other outcomes (a full disk, a signal, a run that must go on) differ
    trains: bool = False  # whether the command trains before its answer (a signal mid-training)
    output: str | None = None  # a part of another line the output must hold (a warning, a log line)
    # None: the console script, from the scratch folder; a module: ``python -m <module>`` from the repository, where
    # scripts/ imports (scripts.bad_inputs.disk_full: distill-train on a full disk; the signal callback of
    # process_signals.py)
    module: str | None = None
    env: dict[str, str] | None = None


def images(scratch: Path, **kwargs: Any) -> Path:
    root = scratch / "images"
    make_image_folder(root, **kwargs)
    return root


def with_images(change: Callable[[Path], Any]) -> Build:
    """An image folder (train/val, classes cat and dog), then ``change(root)``."""
    def build(scratch: Path) -> None:
        change(images(scratch))
    return build


def val_class_train_lacks(root: Path) -> None:
    shutil.copytree(root / "val" / "dog", root / "val" / "bird")


def single_class(root: Path) -> None:
    for split in ("train", "val"):
        shutil.rmtree(root / split / "dog")


def empty_class(root: Path) -> None:
    (root / "train" / "bird").mkdir()


def val_without_classes(root: Path) -> None:
    shutil.rmtree(root / "val")
    (root / "val").mkdir()
    (root / "val" / "loose.png").write_bytes((root / "train" / "cat" / "0.png").read_bytes())


def link_into_other_class(root: Path) -> None:
    (root / "train" / "cat" / "dogs").symlink_to(root / "train" / "dog")


def fake_checkpoint(path: Path, state: dict[str, Any]) -> None:
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)


def checkpoint_of_another_model(scratch: Path) -> None:
    import torch

    fake_checkpoint(scratch / "other.ckpt", {"state_dict": {"student.body.weight": torch.zeros(3)}, "epoch": 0,
                                             "global_step": 1, "loops": {}})


def checkpoint_without_training_state(scratch: Path) -> None:
    fake_checkpoint(scratch / "weights.ckpt", {"state_dict": {}})


def truncated_checkpoint(scratch: Path) -> None:
    checkpoint_of_another_model(scratch)
    path = scratch / "other.ckpt"
    path.write_bytes(path.read_bytes()[:10])


def truncated_weights(scratch: Path) -> None:
    scratch.mkdir(parents=True, exist_ok=True)
    (scratch / "teacher.safetensors").write_bytes(b"\x10\x00\x00")


def folder_in_use(scratch: Path) -> Any:
    """The run folder held (flock, as a run holds it) by this process while the command runs."""
    run = scratch / "run"
    run.mkdir(parents=True)
    handle = open(run / ".run.lock", "w")  # noqa: SIM115 (kept open: the lock lasts while the case runs)
    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle


def finished_run(scratch: Path) -> None:
    run = scratch / "run"
    run.mkdir(parents=True)
    (run / "run_config.json").write_text(json.dumps({"seed": 0}))
    (run / "metrics.json").write_text(json.dumps({"monitored": 0.5}))


def unfinished_run(scratch: Path) -> None:
    run = scratch / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "run_config.json").write_text(json.dumps({"seed": 0}))
    (run / "checkpoints" / "last.ckpt").write_bytes(b"half a checkpoint")


def trained_on_other_images(scratch: Path) -> None:
    """A teacher cached for one image folder; the case's folder has the same class names, the classes swapped."""
    import subprocess
    import sys

    for name in ("images", "first"):
        make_image_folder(scratch / name)
    for split in ("train", "val"):
        folder = scratch / "images" / split
        os.rename(folder / "cat", folder / "tmp")
        os.rename(folder / "dog", folder / "cat")
        os.rename(folder / "tmp", folder / "dog")
    args = [arg.replace("{scratch}/images", str(scratch / "first")) for arg in IMAGE_FOLDER]
    subprocess.run([sys.executable, "-m", "distill.train", *args, "logger=none", f"paths.cache_dir={scratch / 'cache'}",
                    f"hydra.run.dir={scratch / 'first_run'}"], check=True, capture_output=True, timeout=600)


def run_of_another_config(scratch: Path) -> None:
    run = scratch / "run"
    run.mkdir(parents=True)
    (run / "run_config.json").write_text(json.dumps({"student": {"kwargs": {"width": 16}}}))
    (run / "metrics.json").write_text(json.dumps({"monitored": 0.5}))


# The signal callback of process_signals.py, firing in the teacher's fit only (its seed is 0, the run's 1).
SIGTERM_IN_TEACHER = ["+callbacks.kill._target_=scripts.bad_inputs.process_signals.SignalAtBatch",
                      "+callbacks.kill.signal_name=SIGTERM", "+callbacks.kill.epoch=1", "+callbacks.kill.batch=8",
                      "+callbacks.kill.seed=0"]
IMAGE_FOLDER = ["data=image_folder", "data.root={scratch}/images", "data.image_size=16", "data.batch_size=4",
                "data.eval_batch_size=4", "teacher.train.max_epochs=1", "trainer.max_epochs=1"]

CASES: list[InputCase] = [
    # data: missing, mislabelled, damaged (#31 items 2, 3, 10)
    InputCase("image folder missing", ["data=image_folder", "data.root={scratch}/nowhere"],
              "image folder(s) not found"),
    InputCase("Fashion-MNIST missing", ["data=fashion_mnist", "data.root={scratch}/nowhere"],
              "apt-get install -y dataset-fashion-mnist"),
    InputCase("val class that train lacks", IMAGE_FOLDER, "holds class folder(s) bird that",
              with_images(val_class_train_lacks)),
    InputCase("a single class", IMAGE_FOLDER, "has a single class folder", with_images(single_class)),
    InputCase("an empty class folder", IMAGE_FOLDER, "hold no readable image", with_images(empty_class)),
    InputCase("a split without class folders", IMAGE_FOLDER, "has no class folders", with_images(val_without_classes)),
    InputCase("an unreadable image", IMAGE_FOLDER, "unreadable image(s)",
              lambda scratch: images(scratch, bad=1)),
    InputCase("an image that does not decode", [*IMAGE_FOLDER, "data.num_workers=1"], "cannot be decoded",
              with_images(lambda root: truncated_png(root / "train" / "dog" / "cut.png"))),
    InputCase("a link from one class into another", IMAGE_FOLDER, "two labels", with_images(link_into_other_class)),
    InputCase("image channels", [*IMAGE_FOLDER, "data.in_chans=2"], "data.in_chans=2: image folders are read as",
              with_images(lambda root: None)),
    InputCase("a split fraction that empties a class", ["data.val_fraction=0.002"], "holds out 3 of 1437 images"),
    InputCase("a test fraction that empties a class", ["data.test_fraction=0.999"], "holds out 1795 of 1797 images"),
    # checkpoints and weights (#31 item 10, Trust I)
    InputCase("ckpt_path truncated", ["ckpt_path={scratch}/other.ckpt"], "is not a readable checkpoint",
              truncated_checkpoint),
    InputCase("ckpt_path without training state", ["ckpt_path={scratch}/weights.ckpt"],
              "is not a Lightning training checkpoint", checkpoint_without_training_state),
    InputCase("ckpt_path of another model", ["ckpt_path={scratch}/other.ckpt"], "holds another model than this run's",
              checkpoint_of_another_model),
    InputCase("ckpt_path with a chain", ["chain=[small_cnn,small_cnn]", "ckpt_path={scratch}/other.ckpt"],
              "continues with resume=auto", checkpoint_of_another_model),
    InputCase("teacher weights missing", ["teacher.weights={scratch}/none.safetensors"], "none.safetensors"),
    InputCase("teacher weights truncated", ["teacher.weights={scratch}/teacher.safetensors"], "teacher.safetensors",
              truncated_weights),
    # nothing to learn (#31 item 4)
    InputCase("every loss weight zero", ["loss.kd.weight=0", "loss.ce.weight=0"], "weight 0"),
    InputCase("the baseline without cross-entropy", ["stage=student", "loss.ce.weight=0"], "loss.ce.weight=0"),
    InputCase("a teacher that trains 0 steps", ["trainer.limit_train_batches=0"], "trained for 0 optimizer steps"),
    # run folders (#31 item 6)
    InputCase("a run folder in use", [], "is in use by another run (pid", folder_in_use),
    InputCase("a folder with a finished run", [], "holds an earlier run that finished", finished_run),
    InputCase("a folder with an unfinished run", [], "holds an earlier run that did not finish", unfinished_run),
    InputCase("resume=auto into another config's run", ["resume=auto"], "holds a run of another config",
              run_of_another_config),
    # compress options, checked with the rest of the config (#31 item 10)
    InputCase("compress opset", ["compress=int8", "compress.onnx.opset=99"], "compress.onnx.opset=99"),
    InputCase("compress tolerance", ["compress=int8", "compress.onnx.tolerance=0"], "compress.onnx.tolerance=0"),
    InputCase("compress flag", ["compress=int8", "compress.int8.per_channel=maybe"], "compress.int8.per_channel"),
    InputCase("compress calibration method", ["compress=int8", "compress.int8.calibrate_method=best"],
              "compress.int8.calibrate_method=best"),
    InputCase("compress repeats", ["compress=int8", "compress.runtime.repeats=0"], "compress.runtime.repeats=0"),
    InputCase("compress prune ratio", ["compress=prune_int8", "compress.prune.macs_ratio=1.5"],
              "compress.prune.macs_ratio=1.5"),
    InputCase("compress prune tolerance", ["compress=prune_int8", "compress.prune.tolerance=2"],
              "compress.prune.tolerance=2"),
    InputCase("compress qat learning rate", ["compress=qat", "compress.qat.lr=0"], "compress.qat.lr=0"),
    InputCase("compress unknown step", ["compress.steps=[onnx,fp16]"], "unknown step(s)"),
    InputCase("compress loss preset", ["compress=qat", "compress.qat.loss=kdd"], "compress.qat.loss=kdd"),
    # the command line itself (Trust I)
    InputCase("an unknown key", ["trainer.max_epoch=3"], "did you mean trainer.max_epochs"),
    InputCase("an unreadable override", ["trainer.max_epochs=[1"], "cannot read the override"),
    InputCase("a missing --config-dir", ["--config-dir", "{scratch}/no_conf"], "no such folder"),
    # outcomes that are not refusals: each class of #31 that is not about bad input has its row too
    InputCase("the same class names, other images (a cached teacher of other data)",
              [*IMAGE_FOLDER, "data.num_workers=0"], "run folder:", trained_on_other_images, exit_code=0, trains=True,
              output="no cached weights for this config"),
    InputCase("a full disk at a checkpoint write", ["teacher=small_cnn", "teacher.train.max_epochs=2"],
              "disk full: could not write", exit_code=5, trains=True, module="scripts.bad_inputs.disk_full",
              env={"DISK_FULL_AT": "3"}),
    InputCase("SIGTERM while the teacher trains", ["teacher=small_cnn", "teacher.train.max_epochs=2", "seed=1",
                                                  *SIGTERM_IN_TEACHER], "resume=auto hydra.run.dir=", exit_code=143,
              trains=True, output="stopped by SIGTERM at epoch 1", module="distill.train"),
    InputCase("more CPU processes than cores", ["trainer.accelerator=cpu", "trainer.devices=64",
                                                "data=fashion_mnist", "data.root={scratch}/nowhere"],
              "Fashion-MNIST files not found", output="trainer.devices=64 CPU processes on"),
    InputCase("images the model cannot take", ["student=timm", "student.name=vit_tiny_patch16_224"],
              "cannot take inputs of shape (1, 8, 8)"),
]
