"""The caches key on the data itself, not on data.root's name; image folders list each image once, with one
label, whatever links they hold (#31 items 1 and 3)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from distill.data import DigitsDataModule, FashionMNISTDataModule, ImageFolderDataModule
from distill.data.folder_scan import scan_split
from distill.errors import ConfigError
from distill.runner import run
from distill.teacher.weights_cache import teacher_cache_key
from scripts.bad_inputs.image_folders import make_image_folder

IMAGE_FOLDER = ["data=image_folder", "data.image_size=16", "data.batch_size=4", "data.eval_batch_size=4",
                "data.num_workers=0", "teacher.train.max_epochs=1", "trainer.max_epochs=1", "report.enabled=false"]


def swap_classes(split: Path) -> None:
    os.rename(split / "cat", split / "tmp")
    os.rename(split / "dog", split / "cat")
    os.rename(split / "tmp", split / "dog")


def folder_key(make_cfg, root: Path) -> str:
    return teacher_cache_key(make_cfg(*IMAGE_FOLDER, f"data.root={root}"))


def test_image_folder_key_follows_the_images_not_the_folder_name(make_cfg, tmp_path):
    make_image_folder(tmp_path / "a", per_class=2)
    base = folder_key(make_cfg, tmp_path / "a")
    assert folder_key(make_cfg, tmp_path / "a") == base
    assert teacher_cache_key(make_cfg(*IMAGE_FOLDER, f"data.root={tmp_path / 'a'}", "data.num_workers=1")) == base

    swap_classes(tmp_path / "a" / "train")  # same names, sizes and times: only which class holds them changed
    swapped = folder_key(make_cfg, tmp_path / "a")
    assert swapped != base
    swap_classes(tmp_path / "a" / "train")
    assert folder_key(make_cfg, tmp_path / "a") == base

    image = tmp_path / "a" / "val" / "dog" / "0.png"
    image.write_bytes(image.read_bytes())  # rewritten in place: same bytes, a new mtime
    touched = folder_key(make_cfg, tmp_path / "a")
    assert touched != base
    (tmp_path / "a" / "train" / "cat" / "extra.png").write_bytes(image.read_bytes())
    assert folder_key(make_cfg, tmp_path / "a") not in (base, touched)
    (tmp_path / "a" / "train" / "cat" / "notes.txt").write_text("not an image: not loaded, not in the key")
    make_image_folder(tmp_path / "b", per_class=2)  # the same class names and pictures, other files
    assert folder_key(make_cfg, tmp_path / "b") != base


def test_built_in_sets_key_on_the_files_bytes(tmp_path):
    digits, fashion = DigitsDataModule(), FashionMNISTDataModule()
    assert digits.identity() == DigitsDataModule(batch_size=3).identity()
    assert digits.identity() != fashion.identity()
    copy = tmp_path / "fashion"
    shutil.copytree(fashion.root, copy)
    assert FashionMNISTDataModule(root=str(copy)).identity() == fashion.identity()  # a copy elsewhere: same data
    labels = copy / "t10k-labels-idx1-ubyte.gz"
    data = labels.read_bytes()
    labels.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))  # one bit of one file
    assert FashionMNISTDataModule(root=str(copy)).identity() != fashion.identity()


def test_a_teacher_cached_for_one_folder_is_not_reused_for_another(make_cfg, tmp_path):
    """The issue's probe: same class names, swapped content; the second run reused the first's teacher."""
    for name in ("a", "b"):
        make_image_folder(tmp_path / name, per_class=2)
    for split in ("train", "val"):
        swap_classes(tmp_path / "b" / split)
    first = make_cfg(*IMAGE_FOLDER, f"data.root={tmp_path / 'a'}", run="a")
    second = make_cfg(*IMAGE_FOLDER, f"data.root={tmp_path / 'b'}", run="b")
    run(first)
    run(second)
    teachers = [json.loads((Path(cfg.paths.output_dir) / "metrics.json").read_text())["teacher"]
                for cfg in (first, second)]
    assert [teacher["trained_now"] for teacher in teachers] == [True, True]
    assert teachers[0]["cache_key"] != teachers[1]["cache_key"]
    assert not list((Path(first.paths.cache_dir) / "teachers").glob(".*.broken"))


# --- item 3: links ---------------------------------------------------------------------------------------


def scanned(split: Path) -> list[tuple[str, int]]:
    return [(os.path.relpath(path, split), label) for path, label in scan_split(split, {"cat": 0, "dog": 1}).samples]


def test_a_link_back_up_does_not_multiply_images(tmp_path, caplog):
    make_image_folder(tmp_path, per_class=2, splits=("train",))
    split = tmp_path / "train"
    plain = scanned(split)
    (split / "cat" / "up").symlink_to("..")  # to the split folder: every class, under cat
    (split / "dog" / "self").symlink_to(".")  # to itself: a cycle
    (split / "dog" / "nested").mkdir()
    (split / "dog" / "nested" / "back").symlink_to("../..")  # to the class folder, from below
    assert scanned(split) == plain
    assert "3 folder link(s) not followed" in caplog.text


def test_a_file_reached_twice_in_one_class_counts_once(tmp_path):
    make_image_folder(tmp_path, per_class=2, splits=("train",))
    split = tmp_path / "train"
    (split / "cat" / "again.png").symlink_to(split / "cat" / "0.png")
    outside = tmp_path / "more"
    outside.mkdir()
    shutil.copy(split / "cat" / "1.png", outside / "x.png")
    (split / "cat" / "more").symlink_to(outside)
    (split / "cat" / "more2").symlink_to(outside)  # one folder through two links: its images once
    assert sorted(scanned(split)) == sorted([("cat/0.png", 0), ("cat/1.png", 0), ("cat/more/x.png", 0),
                                             ("dog/0.png", 1), ("dog/1.png", 1)])


def test_a_class_folder_may_be_a_link(tmp_path):
    make_image_folder(tmp_path, per_class=2, splits=("train",))
    elsewhere = tmp_path / "cats"
    shutil.move(tmp_path / "train" / "cat", elsewhere)
    (tmp_path / "train" / "cat").symlink_to(elsewhere)
    assert sorted(scanned(tmp_path / "train")) == [("cat/0.png", 0), ("cat/1.png", 0), ("dog/0.png", 1),
                                                   ("dog/1.png", 1)]


@pytest.mark.parametrize("link, target", [("cat/d.png", "dog/0.png"), ("cat/dogs", "dog"), ("dog2", "dog")],
                         ids=["file", "folder", "class-folder"])
def test_one_image_under_two_classes_is_refused(tmp_path, link, target):
    make_image_folder(tmp_path, per_class=2, splits=("train",))
    split = tmp_path / "train"
    (split / link).symlink_to(split / target)
    mapping = {"cat": 0, "dog": 1, "dog2": 2}
    with pytest.raises(ConfigError, match="two labels"):
        scan_split(split, mapping)


def test_image_folder_module_uses_the_scan(tmp_path):
    make_image_folder(tmp_path, per_class=2)
    (tmp_path / "train" / "cat" / "up").symlink_to("..")
    data = ImageFolderDataModule(root=str(tmp_path), num_workers=0)
    data.setup("fit")
    assert len(data.datasets["train"]) == 4 and data.datasets["train"].targets == [0, 0, 1, 1]
