"""Ways a run stops on purpose: each carries the exit code and a one-line message for the command line."""

from __future__ import annotations


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
