"""PyTorch -> ONNX with an explicitly chosen exporter, and the check that the file computes what PyTorch does.

An export is only kept once onnxruntime, fed the same real test images, gives the same logits: the
exporter has had silent accuracy regressions before, and a wrong file is worse than no file.

Every file carries what its user needs as ONNX metadata (``metadata_props``, values JSON): how a raw image
becomes its input (``distill.preprocessing``) and the class names in index order (``distill.classes``). With
``compress.onnx.preprocess=true`` the graph applies the scaling and normalisation itself (pixel values in).
"""

from __future__ import annotations

import json
import re
import warnings
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnx.numpy_helper
import torch
from torch import nn

from distill.compress.ort_runtime import run_batches, session
from distill.errors import ConfigError, DiskFull
from distill.io import atomic_write, disk_full

INPUT_NAME = "images"
OUTPUT_NAME = "logits"
# The model-level metadata_props every file gets: key of export.model_usage -> ONNX metadata key (values JSON).
METADATA_KEYS = {"preprocessing": "distill.preprocessing", "classes": "distill.classes"}


def usage_metadata(usage: Mapping[str, Any]) -> dict[str, str]:
    """``export.model_usage``'s entries as ONNX metadata: ``distill.preprocessing`` and ``distill.classes``."""
    return {key: json.dumps(usage[name]) for name, key in METADATA_KEYS.items() if usage.get(name) is not None}


def usage_from_metadata(props: Mapping[str, str], source: str | Path) -> dict[str, Any]:
    """The ``preprocessing`` and ``classes`` recorded in a file's metadata (those it has)."""
    usage = {}
    for name, key in METADATA_KEYS.items():
        if key in props:
            try:
                usage[name] = json.loads(props[key])
            except ValueError as error:
                raise ConfigError(f"{source}: its ONNX metadata {key} is not JSON ({error}); export it again") from None
    return usage


def read_usage(path: str | Path) -> dict[str, Any]:
    """The ``preprocessing`` and ``classes`` an ONNX file records (empty for a file exported without them)."""
    model = onnx.load(str(path), load_external_data=False)
    return usage_from_metadata({prop.key: prop.value for prop in model.metadata_props}, path)


def raw_pixels(images: torch.Tensor, preprocessing: Mapping[str, Any]) -> torch.Tensor:
    """Normalised images back as the pixel values they came from: ``(images * std + mean) * value_range`` (the
    inverse of the recorded formula), for a graph that normalises them itself.

    Pixels no float resize touched are whole numbers (8-bit values, digits' counts 0..16): they are rounded back
    to them, since the int8 file quantises its input and a value off by float error (7.9999995 for 8) can round
    to the neighbouring step.
    """
    shape = (1, -1, 1, 1)
    mean = torch.tensor(preprocessing["mean"], dtype=images.dtype).view(shape)
    std = torch.tensor(preprocessing["std"], dtype=images.dtype).view(shape)
    pixels = (images * std + mean) * float(preprocessing["value_range"])
    resize = preprocessing.get("resize")
    return pixels.round() if not resize or resize.get("on") != "float pixels" else pixels


def graph_input(images: torch.Tensor, preprocessing: Mapping[str, Any] | None) -> torch.Tensor:
    """What a graph takes for these normalised ``images``: pixel values when it normalises them itself
    (``in_graph``), else the images as they are."""
    return raw_pixels(images, preprocessing) if preprocessing and preprocessing.get("in_graph") else images


def graph_batches(path: str | Path, loader: Iterable) -> Iterator[tuple[Any, ...]]:
    """The batches of a data loader (normalised images, labels, ...) as the ONNX file at ``path`` takes them."""
    preprocessing = read_usage(path).get("preprocessing")
    for images, *rest in loader:
        yield (graph_input(images, preprocessing), *rest)


class RawPixelsModel(nn.Module):
    """``model`` behind its data's scaling and normalisation (``compress.onnx.preprocess=true``): pixel values in
    (decoded, resized and cropped as the recorded preprocessing says), logits out. The same operations in the
    same order as the data modules, so the graph's input tensor is theirs to float precision."""

    value_range: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, model: nn.Module, preprocessing: Mapping[str, Any]) -> None:
        super().__init__()
        self.model = model
        shape = (1, -1, 1, 1)
        self.register_buffer("value_range", torch.tensor(float(preprocessing["value_range"])))
        self.register_buffer("mean", torch.tensor(preprocessing["mean"], dtype=torch.float32).view(shape))
        self.register_buffer("std", torch.tensor(preprocessing["std"], dtype=torch.float32).view(shape))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model((pixels / self.value_range - self.mean) / self.std)


def strip_metadata(model: onnx.ModelProto) -> onnx.ModelProto:
    """Drop what inference never reads (stack traces, doc strings, intermediate shapes) from every node.

    The dynamo exporter annotates each node with its Python stack; on a small student that text is
    several times the size of the weights and would make every file-size comparison meaningless.
    """
    model.doc_string = ""
    del model.graph.value_info[:]
    for node in model.graph.node:
        node.doc_string = ""
        del node.metadata_props[:]
    return model


def compact_names(model: onnx.ModelProto) -> onnx.ModelProto:
    """Rename every internal tensor to a short id and drop node names (inputs and outputs keep theirs).

    Exporters and the quantiser name tensors after module paths (``/stages/stages.1/.../Relu_output_0_scale``),
    each written once per use; on a student of a few thousand weights those names outweigh the weights.
    """
    graph = model.graph
    keep = {value.name for value in [*graph.input, *graph.output]}
    names: dict[str, str] = {}

    def short(name: str) -> str:
        if not name or name in keep:
            return name
        return names.setdefault(name, f"t{len(names)}")

    for initializer in graph.initializer:
        initializer.name = short(initializer.name)
    for node in graph.node:
        node.name = ""
        node.input[:] = [short(name) for name in node.input]
        node.output[:] = [short(name) for name in node.output]
    return model


def drop_unused_opsets(model: onnx.ModelProto) -> onnx.ModelProto:
    """Keep only the operator-set imports some node uses (the default domain always).

    ``quant_pre_process`` saves through onnxruntime's optimiser, which imports all eight domains it knows
    (training, preview, nchwc, ...); on the small int8 student those declarations alone were 187 bytes.
    """
    used = {node.domain for node in model.graph.node} | {""}
    kept = [opset for opset in model.opset_import if opset.domain in used or opset.domain == "ai.onnx"]
    del model.opset_import[:]
    model.opset_import.extend(kept)
    return model


def dedupe_initializers(model: onnx.ModelProto) -> onnx.ModelProto:
    """Store each distinct constant once: the quantiser writes one zero point per tensor even when many
    are the same scalar 0, and the same per-channel vector per use. Graph inputs are left alone (a
    caller may feed them)."""
    graph = model.graph
    inputs = {value.name for value in graph.input}
    first: dict[tuple[int, tuple[int, ...], bytes], str] = {}
    rename: dict[str, str] = {}
    kept = []
    for initializer in graph.initializer:
        key = (initializer.data_type, tuple(initializer.dims), onnx.numpy_helper.to_array(initializer).tobytes())
        if initializer.name not in inputs and key in first:
            rename[initializer.name] = first[key]
            continue
        first.setdefault(key, initializer.name)
        kept.append(initializer)
    if rename:
        for node in graph.node:
            node.input[:] = [rename.get(name, name) for name in node.input]
        del graph.initializer[:]
        graph.initializer.extend(kept)
    return model


def save_onnx(model: onnx.ModelProto, path: str | Path, metadata: Mapping[str, str] | None = None) -> Path:
    """Write ``model`` without metadata, long names, unused opset imports or repeated constants, atomically,
    in one file (our models are far below 2 GiB): the file size then measures the model. ``metadata`` (the
    ``usage_metadata`` of the model) is then its only model-level metadata."""
    stripped = compact_names(dedupe_initializers(drop_unused_opsets(strip_metadata(model))))
    onnx.helper.set_model_props(stripped, dict(sorted((metadata or {}).items())))
    return atomic_write(path, lambda tmp: tmp.write_bytes(stripped.SerializeToString()))


def record_usage(path: str | Path, usage: Mapping[str, Any]) -> Path:
    """Rewrite the ONNX file at ``path`` with ``usage`` (``export.model_usage``) as its metadata, for a file made
    by a tool that writes none."""
    return save_onnx(onnx.load(str(path)), path, usage_metadata(usage))


def _export(model: nn.Module, example: torch.Tensor, path: Path, exporter: str, opset: int) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice on every call
        if exporter == "torchscript":
            torch.onnx.export(model, (example,), str(path), dynamo=False, opset_version=opset,
                              input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], do_constant_folding=True,
                              dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}})
        else:
            torch.onnx.export(model, (example,), str(path), dynamo=True, opset_version=max(opset, 18),
                              input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], external_data=False,
                              dynamic_shapes=({0: torch.export.Dim("batch")},), verbose=False)


def export_onnx(model: nn.Module, input_shape: tuple[int, ...], path: str | Path, exporter: str = "torchscript",
                opset: int = 17, name: str = "model", metadata: Mapping[str, str] | None = None) -> Path:
    """Export ``model`` (eval mode, CPU) with a dynamic batch axis and ``metadata`` (``usage_metadata``); a model
    that cannot be traced is a ConfigError."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.cpu().eval()
    raw = path.with_name(f".{path.name}.raw")
    try:
        _export(model, torch.zeros(2, *input_shape), raw, exporter, opset)
        save_onnx(onnx.load(str(raw)), path, metadata)
    except DiskFull:
        raise  # not the exporter's fault
    except Exception as error:
        full = disk_full(error, path)
        if full is not None:
            raise full from error
        other = "dynamo" if exporter == "torchscript" else "torchscript"
        plain = re.sub(r"\x1b\[[0-9;]*m", "", str(error)).strip()  # the dynamo exporter colours its messages
        reason = (plain.splitlines() or [""])[0][:300]
        raise ConfigError(f"the {exporter} ONNX exporter cannot trace {name}: {type(error).__name__}: {reason}. "
                          f"Fix: try compress.onnx.exporter={other}, or a model without data-dependent Python "
                          "control flow in forward()") from error
    finally:
        raw.unlink(missing_ok=True)
    return path


def compare_with_pytorch(path: str | Path, model: nn.Module, images: torch.Tensor, threads: int = 1,
                         preprocessing: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Largest |logit difference| and top-1 agreement between onnxruntime and PyTorch on ``images``; a graph that
    normalises itself (``preprocessing`` with ``in_graph``) gets the pixel values the images came from."""
    model = model.cpu().eval()
    with torch.no_grad():
        expected = model(images).numpy()
    actual = run_batches(session(path, threads), graph_input(images, preprocessing).numpy(), batch_size=256)
    return {"images": int(len(images)), "max_abs_logit_diff": float(np.abs(actual - expected).max()),
            "top1_agreement": float((actual.argmax(1) == expected.argmax(1)).mean())}


def export_checked(model: nn.Module, input_shape: tuple[int, ...], path: str | Path, images: torch.Tensor,
                   settings: Any, name: str, threads: int = 1, usage: Mapping[str, Any] | None = None
                   ) -> dict[str, Any]:
    """Export, compare in onnxruntime, and delete the file (raising) when it drifts beyond the tolerance.

    ``usage`` (``export.model_usage``) goes into the file's metadata; with ``settings.preprocess`` the graph
    applies its preprocessing's scaling and normalisation, and is checked on the pixel values of ``images``.
    """
    usage = dict(usage or {})
    graph = model
    if settings.get("preprocess", False):
        if usage.get("preprocessing") is None:
            raise ConfigError(f"compress.onnx.preprocess=true, but the data of {name} describe no preprocessing to "
                              "put in the graph; set compress.onnx.preprocess=false")
        usage["preprocessing"] = {**usage["preprocessing"], "in_graph": True}
        graph = RawPixelsModel(model, usage["preprocessing"])
    path = export_onnx(graph, input_shape, path, settings.exporter, settings.opset, name, usage_metadata(usage))
    check = compare_with_pytorch(path, model, images, threads, usage.get("preprocessing"))
    if check["max_abs_logit_diff"] > settings.tolerance:
        path.unlink()
        raise ConfigError(
            f"the {settings.exporter} ONNX export of {name} differs from PyTorch by up to "
            f"{check['max_abs_logit_diff']:.3g} in the logits (top-1 agreement {100 * check['top1_agreement']:.2f} % "
            f"on {check['images']} test images), above compress.onnx.tolerance={settings.tolerance}; the file was "
            "removed. Fix: try the other exporter (compress.onnx.exporter=torchscript|dynamo) or another opset")
    check["input"] = "pixel values (the graph normalises)" if graph is not model else "normalised images"
    return {"file": str(path), "exporter": settings.exporter, "opset": settings.opset, **check}
