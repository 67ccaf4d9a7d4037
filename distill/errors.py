"""Every error of ours, in one place: refusals of bad input (raised before any heavy work starts, each naming
the bad value and the fix) and the ways a run stops on purpose (each with its exit code and a one-line message
for the command line)."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from pathlib import Path


class ConfigError(ValueError):
    """A configuration value that cannot work: the message says which value and how to fix it."""


class FolderInUse(ConfigError):
    """The run folder belongs to another run (running now, or earlier): refused before anything is written there
    (not even error.json, which would mark the other run as failed)."""


class DatasetNotFoundError(FileNotFoundError):
    """A dataset's files are not where the config says; the message names the path and how to get them."""


def close_matches(name: str, candidates: Iterable[str], limit: int = 5) -> str:
    """', '-joined close matches of ``name`` in ``candidates`` (empty string when none are close)."""
    candidates = list(candidates)
    matches = difflib.get_close_matches(name, candidates, n=limit, cutoff=0.6)
    if not matches:  # substring hits help with long timm names ("resnet" -> "resnet18", ...)
        matches = [c for c in candidates if name.lower() in c.lower()][:limit]
    return ", ".join(matches)


# The longest quote of a library's error that a refusal carries (PyTorch lists every mismatched tensor): a refusal
# is one line on the console.
QUOTED_ERROR_CHARS = 300


def quoted(error: BaseException) -> str:
    """An error's text on one line, cut to QUOTED_ERROR_CHARS."""
    text = " ".join(str(error).split())
    return text if len(text) <= QUOTED_ERROR_CHARS else text[:QUOTED_ERROR_CHARS] + " ..."


def one_line(error: BaseException) -> str:
    """The message of ``error`` for a one-line refusal. An error raised in a DataLoader worker arrives re-raised
    with the worker's traceback as its message; its last line holds the original ``Type: message``."""
    message = str(error)
    if "Original Traceback" in message:
        last = next((line for line in reversed(message.splitlines()) if line.strip()), message)
        return last.split(": ", 1)[1] if ": " in last else last
    return message


# --- a run that stops on purpose: the CLI prints the message (no traceback) and exits with ``code`` ---


class RunStopped(Exception):
    """A run that stopped early and said why; the CLI prints the message (no traceback) and exits with ``code``."""

    code = 1


class DivergenceError(RunStopped):
    """A loss term (or the weighted total) became NaN or infinite; training stopped, no checkpoint holds that step.

    ``applied``: whether the step had already updated the weights in memory (the error-mode guard finds it
    at the next host sync); it is then never written to a checkpoint either.
    """

    code = 3

    def __init__(self, term: str, value: float, epoch: int, step: int, applied: bool = False) -> None:
        self.term, self.value, self.epoch, self.step = term, value, epoch, step
        outcome = ("no checkpoint holds it or any later step" if applied else "the step was not applied")
        super().__init__(
            f"non-finite loss: {term} = {value} at epoch {epoch}, step {step}; {outcome}. "
            "Fix: lower optimizer.lr or the term's weight (or enable trainer.gradient_clip_val), "
            "or set guard.on_non_finite=skip to skip such batches")


class RunInterrupted(RunStopped):
    """SIGTERM or Ctrl-C: a checkpoint was written at the last finished step, and the run can resume from it."""

    def __init__(self, signal_name: str, signal_number: int, checkpoint: str | None, epoch: int, step: int) -> None:
        self.signal_name, self.checkpoint, self.epoch, self.step = signal_name, checkpoint, epoch, step
        self.code = 128 + signal_number  # the shell's convention for "ended by signal N"
        where = f"checkpoint written: {checkpoint}" if checkpoint else "no checkpoint could be written"
        super().__init__(f"stopped by {signal_name} at epoch {epoch}, step {step}; {where}")


class InterruptedAfterTraining(RunInterrupted):
    """SIGTERM after training finished (during the export or the report): the run's last checkpoint holds it all."""

    def __init__(self, phase: str, signal_number: int, checkpoint: str | None, epoch: int, step: int) -> None:
        super().__init__("SIGTERM", signal_number, checkpoint, epoch, step)
        self.args = (f"stopped by SIGTERM during {phase}, after training finished (checkpoint: {checkpoint})",)


class DiskFull(RunStopped):
    """A file could not be written for lack of space: the previous version of it is kept (files are written to a
    temporary file and renamed into place), and the run can go on once space is freed."""

    code = 5

    def __init__(self, path: str, free_bytes: int | None) -> None:
        self.path, self.free_bytes = path, free_bytes
        free = "unknown" if free_bytes is None else f"{free_bytes / 2**20:.1f} MiB"
        super().__init__(f"disk full: could not write {path} ({free} free there); the previous version of the file, "
                         "if any, is kept. Fix: free space (or point paths.output_dir / paths.cache_dir elsewhere), "
                         "then run the same command with resume=auto")


class CompressionFailed(RunStopped):
    """A step of ``compress`` failed; the variants made before it are in the report, the traceback in ``details``."""

    code = 4

    def __init__(self, step: str, error: str, details: Path) -> None:
        self.step, self.error, self.details = step, error, details
        super().__init__(f"compression step '{step}' failed: {error} (the variants made before it are kept in "
                         f"the report; traceback in {details})")
