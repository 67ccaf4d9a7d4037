"""The samples of one split of an image folder: (file, label) pairs, each image once, with one label.

What is followed (docs/reliability.md says the same):

* a class folder may itself be a link (``train/cat -> /data/cats``), and links to folders inside a class
  folder are followed;
* a folder reached a second time (a link back up to the class folder, or two links to one folder) is not
  walked again, and a link to the split folder or above it (which would list other classes' folders as
  images of this class) is not followed: both are counted and reported, not silently multiplied;
* a file reached twice within one class (a link to a file already listed) counts once;
* one file reached from two class folders would be one image with two labels: an error naming both paths.

torchvision's ``make_dataset`` follows every link, so a link back up multiplies a folder's images (16 files
became 656 samples in one probe) and lists other classes' images under the linking class.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from distill.errors import ConfigError

log = logging.getLogger("distill")

# torchvision's ImageFolder extensions (kept here so that listing needs no torchvision import).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


@dataclass
class SplitScan:
    samples: list[tuple[str, int]] = field(default_factory=list)
    not_followed: list[str] = field(default_factory=list)  # folder links skipped: reached before, or lead up
    repeated_files: list[str] = field(default_factory=list)  # second paths to a file already listed, counted once


def class_folders(folder: Path) -> list[str]:
    """The split's class names: its sub-folders (links to folders included), sorted as torchvision sorts them."""
    return sorted(entry.name for entry in folder.iterdir() if entry.is_dir())


def _is_at_or_above(path: str, folder: str) -> bool:
    return folder == path or folder.startswith(path.rstrip(os.sep) + os.sep)


def scan_split(folder: Path, mapping: dict[str, int]) -> SplitScan:
    """Every image file under ``folder/<class>/`` labelled by ``mapping`` (the training split's classes)."""
    scan = SplitScan()
    split_real = os.path.realpath(folder)
    class_reals = {name: os.path.realpath(folder / name) for name in class_folders(folder)}
    visited: set[str] = set()
    owner: dict[str, tuple[str, str]] = {}  # real file -> (class, path it was first listed by)
    for name, class_real in class_reals.items():
        label = mapping[name]
        for parent, dirs, files in os.walk(folder / name, followlinks=True):
            real_parent = os.path.realpath(parent)
            other = next((other for other, real in class_reals.items()
                          if other != name and _is_at_or_above(real, real_parent)), None)
            if other is not None:
                raise ConfigError(f"{parent} (in class folder {name}) is the class folder {other} or inside it, so "
                                  "its images would get two labels. Fix: remove the link or give each class its own "
                                  "folder")
            if real_parent in visited or (real_parent != class_real and _is_at_or_above(real_parent, split_real)):
                scan.not_followed.append(parent)
                dirs.clear()
                continue
            visited.add(real_parent)
            dirs.sort()
            for file_name in sorted(files):
                if not file_name.lower().endswith(IMAGE_EXTENSIONS):
                    continue
                path = os.path.join(parent, file_name)
                real = os.path.realpath(path)
                if real in owner:
                    first_class, first_path = owner[real]
                    if first_class != name:
                        raise ConfigError(
                            f"{path} (class {name}) and {first_path} (class {first_class}) are the same file: one "
                            "image with two labels. Fix: keep it in one class folder (remove the link or copy)")
                    scan.repeated_files.append(path)
                    continue
                owner[real] = (name, path)
                scan.samples.append((path, label))
    if scan.not_followed or scan.repeated_files:
        shown = (scan.not_followed + scan.repeated_files)[:3]
        log.warning("data: %s: %d folder link(s) not followed (reached before, or leading back up) and %d file(s) "
                    "reached twice counted once (first: %s); see docs/reliability.md, 'Image folders'", folder,
                    len(scan.not_followed), len(scan.repeated_files), ", ".join(shown))
    return scan
