"""Checks of the ``compress`` config, run before any training so that a bad value costs nothing.

Only the standard library and the config are touched here: ``distill-train`` imports this module on
every run, and the heavy tools (onnxruntime, torch-pruning, torchao) only when a step asks for them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from distill.config import CONF_DIR
from distill.errors import ConfigError

STEPS = ("onnx", "int8", "prune", "qat")
EXPORTERS = ("torchscript", "dynamo")
CALIBRATE_METHODS = ("minmax", "entropy", "percentile")
INT8_FORMATS = ("qdq", "qoperator")
IMPORTANCES = ("l1", "l2")
PRUNE_TEACHERS = ("unpruned", "teacher")
# Lowest and highest opset each exporter of torch.onnx writes (dynamo raises anything below 18 to 18).
OPSETS = {"torchscript": (7, 20), "dynamo": (7, 23)}


def _choice(value: Any, allowed: tuple[str, ...], key: str) -> None:
    if value not in allowed:
        raise ConfigError(f"compress.{key}={value} is not one of: {', '.join(allowed)}")


def _positive(value: Any, key: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"compress.{key}={value} must be a whole number >= 1")


def _number(value: Any, key: str, low: float, high: float | None = None, meaning: str = "") -> None:
    """A real number in (low, high) (high: None for no upper bound)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (value > low and (high is None
                                                                                              or value < high)):
        bound = f"between {low} and {high}" if high is not None else f"greater than {low}"
        raise ConfigError(f"compress.{key}={value} must be a number strictly {bound}{meaning}")


def _flag(value: Any, key: str) -> None:
    if not isinstance(value, bool):
        raise ConfigError(f"compress.{key}={value} must be true or false")


def _count(value: Any, key: str) -> None:
    """A whole number >= 0."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"compress.{key}={value} must be a whole number >= 0")


def loss_preset_path(name: str, key: str) -> Path:
    """The file of a loss preset named in the compress config (``kd`` -> conf/loss/kd.yaml)."""
    path = CONF_DIR / "loss" / f"{name}.yaml"
    if not path.is_file():
        presets = sorted(p.stem for p in (CONF_DIR / "loss").glob("*.yaml"))
        raise ConfigError(f"compress.{key}={name} is not a loss preset; choose one of: {', '.join(presets)} "
                          "(or null for the run's own loss)")
    return path


def steps(settings: Any) -> list[str]:
    """The requested steps in the order they run (the order in the config does not matter)."""
    asked = list(settings.get("steps") or []) if settings is not None else []
    unknown = [step for step in asked if step not in STEPS]
    if unknown:
        raise ConfigError(f"compress.steps has unknown step(s) {unknown}; choose from: {', '.join(STEPS)}")
    if asked and "onnx" not in asked:
        asked.append("onnx")  # every later step measures or quantises the fp32 ONNX export
    return [step for step in STEPS if step in asked]


def check_settings(settings: Any, has_teacher: bool = True, only: tuple[str, ...] = STEPS) -> list[str]:
    """Validate every value the requested steps read (of those in ``only``: a teacher run exports ONNX and
    nothing else); return all the requested steps in running order."""
    requested = steps(settings)
    wanted = [step for step in requested if step in only]
    if not wanted:
        return requested
    _choice(settings.onnx.exporter, EXPORTERS, "onnx.exporter")
    opset, (lowest, highest) = settings.onnx.opset, OPSETS[settings.onnx.exporter]
    if isinstance(opset, bool) or not isinstance(opset, int) or not lowest <= opset <= highest:
        raise ConfigError(f"compress.onnx.opset={opset} must be a whole number from {lowest} to {highest} (the "
                          f"opsets the {settings.onnx.exporter} exporter writes)")
    _positive(settings.onnx.check_images, "onnx.check_images")
    _number(settings.onnx.tolerance, "onnx.tolerance", 0, None, " (the largest |logit difference| accepted)")
    if "int8" in wanted:
        _choice(settings.int8.calibrate_method, CALIBRATE_METHODS, "int8.calibrate_method")
        _choice(settings.int8.format, INT8_FORMATS, "int8.format")
        _positive(settings.int8.calibration_images, "int8.calibration_images")
        _positive(settings.int8.calibration_batch_size, "int8.calibration_batch_size")
        _flag(settings.int8.per_channel, "int8.per_channel")
        _flag(settings.int8.reduce_range, "int8.reduce_range")
        _count(settings.int8.seed, "int8.seed")
    if "prune" in wanted:
        ratio = settings.prune.macs_ratio
        if not isinstance(ratio, (int, float)) or not 0 < ratio < 1:
            raise ConfigError(f"compress.prune.macs_ratio={ratio} must lie strictly between 0 and 1 (the pruned "
                              "model's share of the student's MACs), e.g. compress.prune.macs_ratio=0.5")
        _number(settings.prune.tolerance, "prune.tolerance", 0, 1, " (the accepted relative distance to the MACs "
                "target)")
        _choice(settings.prune.importance, IMPORTANCES, "prune.importance")
        _choice(settings.prune.teacher, PRUNE_TEACHERS, "prune.teacher")
        if settings.prune.teacher == "teacher" and not has_teacher:
            raise ConfigError("compress.prune.teacher=teacher but this run has no teacher; "
                              "use compress.prune.teacher=unpruned")
        if settings.prune.round_to is not None:
            _positive(settings.prune.round_to, "prune.round_to")
        if settings.prune.loss is not None:
            loss_preset_path(settings.prune.loss, "prune.loss")
        _positive(settings.prune.epochs, "prune.epochs")
    if "qat" in wanted:
        _positive(settings.qat.epochs, "qat.epochs")
        _positive(settings.qat.calibration_images, "qat.calibration_images")
        _number(settings.qat.lr, "qat.lr", 0, None, " (the fine-tuning learning rate)")
        if settings.qat.loss is not None:
            loss_preset_path(settings.qat.loss, "qat.loss")
    _positive(settings.runtime.threads, "runtime.threads")
    _count(settings.runtime.warmup, "runtime.warmup")
    _positive(settings.runtime.repeats, "runtime.repeats")
    _positive(settings.runtime.throughput_batch_size, "runtime.throughput_batch_size")
    return requested
