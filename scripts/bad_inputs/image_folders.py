"""Small image folders written for tests: one sub-folder of PNG files per class, optionally broken files."""

from __future__ import annotations

from pathlib import Path


def make_image_folder(root: Path, per_class: int = 4, bad: int = 0, splits: tuple[str, ...] = ("train", "val")
                      ) -> None:
    from PIL import Image

    for split in splits:
        for label, color in (("cat", 40), ("dog", 200)):
            folder = root / split / label
            folder.mkdir(parents=True)
            for i in range(per_class):
                Image.new("RGB", (12, 10), (color, i * 10, 0)).save(folder / f"{i}.png")
    for i in range(bad):
        (root / "train" / "cat" / f"broken{i}.jpg").write_bytes(b"not an image at all")


def truncated_png(path: Path) -> None:
    """A PNG whose header reads (size, mode) but whose pixel data is cut short: only decoding finds it."""
    import numpy as np
    from PIL import Image

    noise = np.random.default_rng(0).integers(0, 255, (40, 40, 3), dtype=np.uint8)
    Image.fromarray(noise).save(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
