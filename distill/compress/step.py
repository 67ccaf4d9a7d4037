"""What a compression step is, the registry of steps, and the order they run in.

A step is one module of ``distill/compress/steps/`` that calls ``register_step`` and one preset of
``conf/compress/``. The running order and the order of the report's rows are derived here from what each
step declares (the steps whose files it reads, the rows it adds), never listed by hand.

Only the standard library is imported: ``distill-train`` checks the compress settings on every run, and the
steps import their heavy tools (onnxruntime, Torch-Pruning, torchao) when they run.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from distill.errors import ConfigError

if TYPE_CHECKING:
    import torch
    from omegaconf import DictConfig
    from torch import nn




@dataclass
class Variant:
    """A deployable file a step made: one row of the report."""

    name: str  # "PyTorch fp32", "ONNX int8", "pruned ONNX int8", ...
    file: Path
    model: nn.Module  # the PyTorch network it came from: parameters and MACs are counted on it
    precision: str  # fp32 | int8
    details: dict[str, Any] = field(default_factory=dict)  # how it was made (export check, calibration, ...)

    @property
    def runtime(self) -> str:
        return "onnxruntime" if self.file.suffix == ".onnx" else "pytorch"


class Workspace:
    """What every step works on: the run's config, its data, the student, the teacher, the run folder, and the
    variants made so far (each a row of the report)."""

    def __init__(self, cfg: DictConfig, student: nn.Module, teacher: nn.Module | None, datamodule: Any,
                 run_dir: Path, architecture: str, model_kwargs: dict[str, Any], check_images: torch.Tensor,
                 steps: list[str]) -> None:
        self.cfg = cfg
        self.settings = cfg.compress
        self.student = student
        self.teacher = teacher
        self.datamodule = datamodule
        self.run_dir = Path(run_dir)
        self.architecture = architecture
        self.model_kwargs = model_kwargs
        self.input_shape = tuple(datamodule.input_shape)
        self.check_images = check_images  # test images the export checks run on
        self.steps = steps  # the steps of this call, in running order
        self.variants: list[Variant] = []

    def add(self, variant: Variant) -> Variant:
        self.variants.append(variant)
        return variant

    def latest(self, name: str) -> Variant:
        """The last variant of that row name (``ONNX fp32``: the student's export that int8 quantises)."""
        return next(variant for variant in reversed(self.variants) if variant.name == name)

    def add_model(self, variant: Variant, stem: str, label: str) -> Variant:
        """Add a network a step made (a pruned student), then pass it through this call's conversions (ONNX
        export, int8), each reading what the one before it wrote. Conversions run before the steps that make
        networks (``running_order``), so each has already converted the student by then."""
        made = self.add(variant)
        for name in self.steps:
            convert = STEPS[name].convert
            if convert is not None:
                made = convert(self, made, stem, label)
        return variant


@dataclass(frozen=True)
class CompressionStep:
    """One step: ``check`` validates its settings before any training (``settings`` is the ``compress``
    config, ``has_teacher`` whether the run has one); ``run`` adds its variants to the workspace."""

    name: str
    rows: tuple[str, ...]  # the report rows it adds, in report order; the first names the row of a failure
    check: Callable[[Any, bool], None]
    run: Callable[[Workspace], None]
    needs: tuple[str, ...] = ()  # steps whose files it reads: they run before it, and are added when not asked
    # A format conversion (ONNX export, int8) also converts every network a later step makes: (workspace,
    # source variant, file stem, row label) -> the converted variant.
    convert: Callable[[Workspace, Variant, str, str], Variant] | None = None
    model_label: str = ""  # a step that makes a network: the label of its rows ("pruned" ONNX fp32)
    student_only: bool = True  # false: also applies to a stage=teacher run's model (the ONNX export)


STEPS: dict[str, CompressionStep] = {}


def register_step(step: CompressionStep) -> CompressionStep:
    if step.name in STEPS:
        raise ValueError(f"compression step '{step.name}' is registered twice")
    STEPS[step.name] = step
    return step


def running_order(asked: Iterable[str]) -> list[str]:
    """``asked`` and every step they need, each after the steps it needs. Among steps free to run, conversions
    go first (so the networks later steps make pass through them), then by name: the order does not depend on
    how the config lists the steps."""
    wanted: set[str] = set()
    pending = list(asked)
    while pending:
        name = pending.pop()
        if name not in wanted:
            wanted.add(name)
            pending.extend(STEPS[name].needs)
    order: list[str] = []
    while len(order) < len(wanted):
        ready = [name for name in wanted - set(order) if all(need in order for need in STEPS[name].needs)]
        if not ready:
            raise ValueError(f"compression steps {sorted(wanted - set(order))} need each other in a circle")
        order.append(min(ready, key=lambda name: (STEPS[name].convert is None, name)))
    return order


def row_order() -> list[str]:
    """Every report row a variant can have, in the order the report lists them."""
    order = running_order(STEPS)
    conversions = [STEPS[name] for name in order if STEPS[name].convert is not None]
    rows = ["PyTorch fp32"]
    for name in order:
        step = STEPS[name]
        rows += step.rows
        if step.model_label:
            rows += [f"{step.model_label} {conversion.rows[0]}" for conversion in conversions]
    return rows


def step_settings(settings: Any, name: str) -> Any:
    """``compress.<name>``: a step's own settings, which its preset of conf/compress brings."""
    value = settings.get(name)
    if value is None:
        raise ConfigError(f"compress.steps asks for {name} but compress.{name} has no settings; start from its "
                          f"preset (compress={name}) or add them (+compress.{name}.<option>=...)")
    return value
