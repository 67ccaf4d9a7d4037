"""``distill-predict MODEL IMAGE|FOLDER ...``: classify image files with an exported model, as anyone outside
distill would run it: how an image becomes the model's input, and the class names, come from the model's own
record (``<stem>.json``, or an ONNX file's metadata), never from a config.

A plain argparse command rather than a Hydra app: there is no config to compose (the model says how images
become its input), the inputs are any number of paths (a shell glob gives hundreds, which Hydra's
``key=value`` grammar would need as a quoted list with its special characters escaped), and nothing needs a
run folder. Bad input is one line on stderr and exit code 2, as with every other command.
"""

from __future__ import annotations

import argparse
import csv
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from distill.cli import fail
from distill.errors import ConfigError, RunStopped
from distill.io import atomic_write

MODEL_SUFFIXES = (".json", ".onnx")
CSV_COLUMNS = ("path", "class", "index", "probability")


def image_files(inputs: Sequence[str]) -> list[Path]:
    """The image files ``inputs`` name: files as given, folders searched recursively for the extensions image
    folders read."""
    # Here, not at the top: the data package imports torch and Lightning, and a bad model path answers without them.
    from distill.data.folder_scan import IMAGE_EXTENSIONS

    files: list[Path] = []
    for given in inputs:
        path = Path(given).expanduser()
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and p.name.lower().endswith(IMAGE_EXTENSIONS))
            if not found:
                raise ConfigError(f"{path} holds no image file (searched recursively for "
                                  f"{', '.join(IMAGE_EXTENSIONS)})")
            files += found
        elif path.is_file():
            files.append(path)
        else:
            raise ConfigError(f"{path}: no such file or folder; give image files or folders of images")
    return files


def read_image(path: Path, preprocessing: Mapping[str, Any]) -> np.ndarray:
    """The recorded preprocessing's first steps on an image file: decoded as RGB (then PIL's 'L' for one channel),
    the 8-bit image resized and centre-cropped as torchvision does it; C x H x W float32 pixel values."""
    from PIL import Image

    with open(path, "rb") as handle, Image.open(handle) as opened:
        image = opened.convert("RGB")
    if preprocessing["channels"] == 1:
        image = image.convert("L")
    resize = preprocessing.get("resize")
    if resize and resize["on"] == "8-bit image":
        image = image.resize(resized_size(image.size, resize), Image.Resampling.BILINEAR)
    crop = preprocessing.get("center_crop")
    if crop:
        height, width = crop
        top, left = int(round((image.height - height) / 2.0)), int(round((image.width - width) / 2.0))
        image = image.crop((left, top, left + width, top + height))
    pixels = np.asarray(image, dtype=np.float32)
    return pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)


def resized_size(size: tuple[int, int], resize: Mapping[str, Any]) -> tuple[int, int]:
    """(width, height) after ``resize``: a fixed ``size`` [H, W], or the ``shorter_side`` with the longer side
    scaled and rounded down (torchvision's ``Resize(int)``)."""
    if "size" in resize:
        height, width = resize["size"]
        return width, height
    width, height = size
    short, long = min(width, height), max(width, height)
    new_long = int(resize["shorter_side"] * long / short)
    return (resize["shorter_side"], new_long) if width <= height else (new_long, resize["shorter_side"])


def model_input(pixels: np.ndarray, preprocessing: Mapping[str, Any], source: str = "the image") -> np.ndarray:
    """The model's input (C x H x W float32) from pixel values (C x H x W: a decoded file, or a dataset's raw
    array): the float resize where recorded, then ``(pixels / value_range - mean) / std`` per channel, unless the
    graph does that itself (``in_graph``)."""
    from PIL import Image

    resize = preprocessing.get("resize")
    if resize and resize["on"] == "float pixels":
        width, height = resized_size((pixels.shape[2], pixels.shape[1]), resize)
        pixels = np.stack([np.asarray(Image.fromarray(np.ascontiguousarray(channel, dtype=np.float32))
                                      .resize((width, height), Image.Resampling.BILINEAR)) for channel in pixels])
    expected = (preprocessing["channels"], *preprocessing["input_size"])
    if pixels.shape != expected:
        raise ConfigError(f"{source} is {pixels.shape[1]}x{pixels.shape[2]} pixels; the model takes "
                          f"{expected[1]}x{expected[2]} and its preprocessing records no resize (every training image "
                          "had that size): resize it first")
    pixels = pixels.astype(np.float32)
    if preprocessing.get("in_graph"):
        return pixels
    mean = np.asarray(preprocessing["mean"], dtype=np.float32).reshape(-1, 1, 1)
    std = np.asarray(preprocessing["std"], dtype=np.float32).reshape(-1, 1, 1)
    return ((pixels / np.float32(preprocessing["value_range"]) - mean) / std).astype(np.float32)


def check_model_path(path: Path) -> None:
    if not path.is_file():
        raise ConfigError(f"{path}: no such model file; give an exported model: <stem>.json (the safetensors beside "
                          "it) or an .onnx file of a run folder")
    if path.suffix not in MODEL_SUFFIXES:
        raise ConfigError(f"{path} is not an exported model; give <stem>.json (the safetensors beside it) or an "
                          ".onnx file of a run folder")


def load_model(path: Path, threads: int) -> tuple[Callable[[np.ndarray], np.ndarray], dict[str, Any]]:
    """A function from model inputs (N x C x H x W) to logits, and the model's recorded ``preprocessing`` and
    ``classes``: ``<stem>.json`` (with its safetensors) in PyTorch, ``.onnx`` files in onnxruntime."""
    if path.suffix == ".onnx":
        return load_onnx(path, threads)
    import torch

    from distill.export import load_exported

    if threads > 0:
        torch.set_num_threads(threads)
    model, description = load_exported(path)

    def run(batch: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return model(torch.from_numpy(batch)).numpy()

    return run, {name: description[name] for name in ("preprocessing", "classes") if name in description}


def load_onnx(path: Path, threads: int) -> tuple[Callable[[np.ndarray], np.ndarray], dict[str, Any]]:
    from distill.compress import ort_runtime
    from distill.compress.onnx_io import usage_from_metadata

    try:
        session = ort_runtime.session(path, threads)
    except Exception as error:  # onnxruntime raises its own classes (InvalidProtobuf, Fail, ...) for a bad file
        reason = " ".join(str(error).split())[:200]
        raise ConfigError(f"cannot load {path} as an ONNX model ({reason}); give an .onnx file distill wrote, whole"
                          ) from None
    usage = usage_from_metadata(session.get_modelmeta().custom_metadata_map, path)
    return (lambda batch: ort_runtime.run_batches(session, batch, batch_size=len(batch))), usage


def recorded(usage: Mapping[str, Any], path: Path) -> tuple[dict[str, Any], list[str]]:
    """The model's preprocessing and class names; a model exported before they were recorded is refused with
    how to re-export it."""
    lacking = [name for name in ("preprocessing", "classes") if usage.get(name) is None]
    if lacking:
        raise ConfigError(f"{path} records no {' and no '.join(lacking)} (exported before distill recorded how "
                          "images become its input): re-export it with `distill-compress run=<its run folder> "
                          "compress=int8`, which rewrites student.onnx and student.int8.onnx with them, and give one "
                          "of those; runs trained now record them in <stem>.json too")
    return dict(usage["preprocessing"]), list(usage["classes"])


def batches(files: list[Path], preprocessing: Mapping[str, Any], size: int) -> Iterator[tuple[list[Path], np.ndarray]]:
    """Model inputs ``size`` files at a time; a file that cannot be decoded is a ConfigError naming it."""
    from PIL import Image

    for start in range(0, len(files), size):
        chunk = files[start:start + size]
        inputs = []
        for path in chunk:
            try:
                pixels = read_image(path, preprocessing)
            except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
                reason = (str(error).splitlines() or [type(error).__name__])[0][:120]
                raise ConfigError(f"cannot read image {path} ({reason}); remove it or give another file") from None
            inputs.append(model_input(pixels, preprocessing, str(path)))
        yield chunk, np.stack(inputs)


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits.astype(np.float64) - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def predict(model_path: str | Path, inputs: Sequence[str], out: str | Path | None = None, batch_size: int = 64,
            threads: int = 0) -> list[dict[str, Any]]:
    """Classify the images ``inputs`` name; print one line per image (path, class, probability) as it goes and
    write every row to the CSV ``out`` (atomically) at the end. Every refusal is a ConfigError."""
    path = Path(model_path).expanduser()
    check_model_path(path)
    if out is not None and Path(out).is_dir():
        raise ConfigError(f"--out {out} is a folder; give the CSV file to write, e.g. {Path(out) / 'predictions.csv'}")
    if batch_size < 1:
        raise ConfigError(f"--batch-size {batch_size} must be a whole number >= 1")
    if threads < 0:
        raise ConfigError(f"--threads {threads} must be a whole number >= 0 (0: the runtime's default)")
    files = image_files(inputs)
    from distill.data.image_folder import unreadable

    bad = next(((path, reason) for path in files if (reason := unreadable(str(path))) is not None), None)
    if bad is not None:  # headers first (cheap): a bad file is found before any output
        raise ConfigError(f"cannot read image {bad[0]} ({bad[1]}); remove it or give another file")
    run, usage = load_model(path, threads)
    preprocessing, classes = recorded(usage, path)
    rows: list[dict[str, Any]] = []
    for chunk, images in batches(files, preprocessing, batch_size):
        logits = run(images)
        if logits.shape[1] != len(classes):
            raise ConfigError(f"{path} gives {logits.shape[1]} logits but records {len(classes)} class names; export "
                              "it again")
        probabilities = softmax(logits)
        for file, row in zip(chunk, probabilities):
            index = int(row.argmax())
            rows.append({"path": str(file), "class": classes[index], "index": index,
                         "probability": float(row[index])})
            print(f"{file}\t{classes[index]}\t{row[index]:.4f}", flush=True)
    if out is not None:
        atomic_write(out, lambda tmp: write_csv(tmp, rows))
    return rows


def write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        writer.writerows({**row, "probability": f"{row['probability']:.6f}"} for row in rows)


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="distill-predict",
        description="Classify image files with an exported model. How an image becomes the model's input and the "
                    "class names come from the model's own record (student.json, or an ONNX file's metadata). "
                    "Prints one line per image: path, class, probability (tab-separated).",
        epilog="examples: distill-predict outputs/distill/<run>/student.int8.onnx photos/ --out predictions.csv; "
               "distill-predict outputs/distill/<run>/student.json cat.png dog.jpg")
    parser.add_argument("model", help="<stem>.json (safetensors weights beside it), <stem>.onnx or <stem>.int8.onnx")
    parser.add_argument("inputs", nargs="+", help="image files, or folders searched recursively for images")
    parser.add_argument("--out", help="also write the predictions to this CSV file (path,class,index,probability)")
    parser.add_argument("--batch-size", type=int, default=64, help="images per forward pass (default 64)")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (default 0: the runtime's default)")
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = parser().parse_args(argv)
    try:
        predict(args.model, args.inputs, args.out, args.batch_size, args.threads)
    except ConfigError as error:
        fail(error)
    except RunStopped as error:  # a full disk while writing the CSV
        print(f"error: {error}", file=sys.stderr)
        sys.exit(error.code)


if __name__ == "__main__":
    main()
