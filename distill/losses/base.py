"""What every loss term sees and promises: the batch's outputs in, a scalar out, layers declared up front."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from distill.data.registry import has_sample_labels, with_sample_labels
from distill.errors import ConfigError


@dataclass
class DistillBatch:
    """Everything a loss term may read for one training batch."""

    targets: torch.Tensor
    student_logits: torch.Tensor
    teacher_logits: torch.Tensor | None = None
    student_features: dict[str, torch.Tensor] = field(default_factory=dict)
    teacher_features: dict[str, torch.Tensor] = field(default_factory=dict)
    epoch: int = 0
    indices: torch.Tensor | None = None  # each sample's index in the training set (in-memory data modules)


@dataclass
class WrappedStudent:
    """The network a term trains in place of the plain student, and how the run names and rebuilds it."""

    model: nn.Module
    name: str  # the timm-registered architecture that rebuilds ``model`` from ``kwargs`` (for export)
    kwargs: dict[str, Any]
    label: str  # what the summary and the efficiency report call it
    note: str  # one sentence for the summary: what the measured network contains beyond the student


class LossTerm(nn.Module):
    """One weighted term of a run's loss.

    Subclasses set ``needs_teacher`` and fill ``student_layers``/``teacher_layers`` with the module paths
    whose outputs they read; ``build`` is called once with example features (a dry run) so that adapters
    can be sized before the optimizer is made. ``forward`` returns the *unweighted* term; the module
    multiplies by ``weight`` so that each term is logged on its own scale.
    """

    needs_teacher: bool = True
    # Per-sample state (CRD's memory banks): the data module must index its samples (``check_sample_labels``).
    needs_sample_labels: bool = False
    # An initialisation stage (FitNet's first stage, AB's and FSP's init training): for the first
    # ``hint_only_epochs`` epochs only such terms train; a term with ``main_stage = False`` is dropped afterwards.
    hint_only_epochs: int = 0
    main_stage: bool = True

    @property
    def softmax_temperature(self) -> float | None:
        """The fixed temperature at which the term compares softened class probabilities (KD's ``T``); None for a
        term without one. The teacher-output cache stores top-k probabilities at it."""
        return None

    def __init__(self, weight: float = 1.0) -> None:
        super().__init__()
        self.weight = float(weight)
        self.student_layers: tuple[str, ...] = ()
        self.teacher_layers: tuple[str, ...] = ()

    def attach(self, student: nn.Module, teacher: nn.Module | None) -> None:
        """Read what the term needs from the networks themselves (OFD: the teacher's BatchNorm); default: nothing.

        Called once, before ``build``, with the networks whose features the term will see.
        """

    def wrap_student(self, student: nn.Module, student_kwargs: dict[str, Any], student_name: str,
                     teacher: nn.Module, teacher_name: str, input_shape: tuple[int, ...]) -> WrappedStudent | None:
        """A larger network around the student that the run trains, exports and measures instead (SimKD's
        projector and reused teacher classifier); default: None, the student stays as it is.

        Called once before training, with the teacher whose weights may still be loaded or trained later.
        """
        return None

    def build(self, student_features: dict[str, torch.Tensor], teacher_features: dict[str, torch.Tensor]) -> None:
        """Create adapters from example feature shapes; the default term has none."""

    def attach_data(self, datamodule: Any) -> None:
        """Size per-sample state from the training set (CRD's memory banks) when fitting starts; default: none.

        Called before a resumed checkpoint is loaded, so buffers made here are restored from it.
        """

    def extra_repr(self) -> str:
        return f"weight={self.weight}"


def sum_terms(terms: Iterable[torch.Tensor]) -> torch.Tensor:
    """``sum(terms)`` for callers that pass at least one tensor (the built-in returns its start, the int 0, for
    none; the type checker cannot know there is one)."""
    total = sum(terms)
    assert isinstance(total, torch.Tensor), "sum_terms needs at least one term"
    return total


def check_stages(name: str, hint_only_epochs: int, main_stage: bool) -> None:
    """A term that is off after its initialisation stage needs one."""
    if hint_only_epochs <= 0 and not main_stage:
        raise ConfigError(f"loss.{name} with hint_only_epochs={hint_only_epochs} and main_stage=false is never "
                          f"trained; set loss.{name}.hint_only_epochs=30 (the reference) "
                          f"or loss.{name}.main_stage=true")


def check_sample_labels(name: str, datamodule: Any) -> None:
    """A term with per-sample state needs the data module to hand each sample's index to the step and to
    say every training sample's label (``train_labels``)."""
    if not has_sample_labels(datamodule):
        raise ConfigError(
            f"loss.{name} needs each training sample's index and label, and {type(datamodule).__name__} has no "
            f"train_labels; use a data module that has ({', '.join(with_sample_labels())})")
