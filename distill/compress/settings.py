"""Checks of the ``compress`` config, run before any training so that a bad value costs nothing.

Each step checks its own settings (``distill/compress/steps/``); the runtime settings every measured variant
uses are checked here. Only the standard library and the config are imported: ``distill-train`` imports this
module on every run, the heavy tools (onnxruntime, Torch-Pruning, torchao) load only when a step runs.
"""

from __future__ import annotations

from typing import Any

from distill.compress import steps as _steps  # noqa: F401  (registers the steps)
from distill.compress.checks import check_count, check_positive
from distill.compress.step import STEPS, running_order
from distill.errors import ConfigError


def steps(settings: Any) -> list[str]:
    """The requested steps and those they need, in the order they run (the order in the config does not matter)."""
    asked = list(settings.get("steps") or []) if settings is not None else []
    unknown = [step for step in asked if step not in STEPS]
    if unknown:
        raise ConfigError(f"compress.steps has unknown step(s) {unknown}; choose from: {', '.join(sorted(STEPS))}")
    return running_order(asked)


def check_settings(settings: Any, has_teacher: bool = True, teacher_run: bool = False) -> list[str]:
    """Validate every value the requested steps read (in a ``stage=teacher`` run, ``teacher_run``, only the
    steps that apply to a teacher: its ONNX export); return all the requested steps in running order."""
    requested = steps(settings)
    wanted = [step for step in requested if not (teacher_run and STEPS[step].student_only)]
    if not wanted:
        return requested
    for step in wanted:
        STEPS[step].check(settings, has_teacher)
    check_positive(settings.runtime.threads, "runtime.threads")
    check_count(settings.runtime.warmup, "runtime.warmup")
    check_positive(settings.runtime.repeats, "runtime.repeats")
    check_positive(settings.runtime.throughput_batch_size, "runtime.throughput_batch_size")
    return requested
