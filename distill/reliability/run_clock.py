"""A run's training time over every call that trained it, so a run resumed after an interruption reports what it
cost, not only its last part.

Every fit has Lightning's ``Timer`` callback, which keeps the training time in each checkpoint and, on resume,
continues from it. A run that resumes reads, before anything trains, the time kept in the ``last.ckpt`` of
every model trained in its folder (its own, its teacher's, its chain links'): that is what the earlier calls
spent, up to their last checkpoint. Work lost after that checkpoint is trained again in this call and counted
there.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Timer

log = logging.getLogger("distill")

LAST_CHECKPOINT = "last.ckpt"


def with_training_timer(callbacks: Sequence[L.Callback], max_time: object) -> list[L.Callback]:
    """``callbacks`` with a ``Timer``, unless they have one or ``trainer.max_time`` makes Lightning add its own:
    a second Timer would clash with it (Lightning keeps one stateful callback of a type) and void ``max_time``."""
    if max_time is not None or any(isinstance(cb, Timer) for cb in callbacks):
        return list(callbacks)
    return [*callbacks, Timer()]


def checkpoint_training_seconds(path: Path) -> float | None:
    """The training seconds a checkpoint's ``Timer`` kept; None for a checkpoint written without one, or one that
    cannot be read (``resume=auto`` starts that model over: its earlier time is lost to the count)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # a timing read never stops a run; the resume logic reports the file
        return None
    for key, value in (state.get("callbacks") or {}).items():
        if str(key).startswith("Timer") and isinstance(value, dict) and "time_elapsed" in value:
            return float(value["time_elapsed"].get("train", 0.0))
    return None


def earlier_training_seconds(output_dir: Path, ckpt_path: str | None = None) -> float | None:
    """The training seconds that earlier calls spent on the run in ``output_dir``: the sum over every model's
    ``last.ckpt`` below it, and ``ckpt_path`` (a checkpoint elsewhere that the run continues from); 0 with none;
    None when a checkpoint does not say (written before runs kept the time, or unreadable)."""
    paths = {path.resolve() for path in output_dir.rglob(LAST_CHECKPOINT)}
    if ckpt_path:
        paths.add(Path(ckpt_path).resolve())
    total = 0.0
    for path in sorted(paths):
        seconds = checkpoint_training_seconds(path)
        if seconds is None:
            log.warning("%s keeps no training time: this run's seconds count this call only", path)
            return None
        total += seconds
    return total
