"""SIGTERM (how schedulers stop jobs) and Ctrl-C end a run at the next finished step, with a checkpoint.

The handlers only record the signal: saving from inside a handler could catch the optimizer half-way
through a step. The checkpoint is written in ``on_train_batch_end``, where ``ModelCheckpoint`` writes its
step checkpoints, so resuming from it continues with the next batch exactly as a step checkpoint does.
A second Ctrl-C stops at once (Python's default behaviour is restored after the first).
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities.exceptions import SIGTERMException

from distill.errors import RunInterrupted

log = logging.getLogger("distill")

HANDLED = (signal.SIGTERM, signal.SIGINT)


class CheckpointOnSignal(L.Callback):
    """On SIGTERM/SIGINT: write ``last.ckpt`` after the step in progress, then raise ``RunInterrupted``."""

    def __init__(self) -> None:
        self.received: int | None = None
        self.stopped: RunInterrupted | None = None  # set when the run stopped through Lightning's SIGTERMException
        self._previous: dict[int, Any] = {}

    def _handler(self, signum: int, frame: Any) -> None:
        first = self.received is None
        self.received = signum
        if signum == signal.SIGINT:
            signal.signal(signal.SIGINT, signal.default_int_handler)  # a second Ctrl-C interrupts at once
        previous = self._previous.get(signum)
        if first and callable(previous) and signum == signal.SIGTERM:
            previous(signum, frame)  # Lightning's own SIGTERM handler (it also tells the other DDP ranks)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # After Lightning registered its handlers (in Trainer._run), so SIGTERM goes to ours, then to its.
        self.received = None
        for signum in HANDLED:
            self._previous[signum] = signal.getsignal(signum)
            signal.signal(signum, self._handler)

    def _restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
        self._previous.clear()

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._restore()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if self.received is not None:
            self._stop(trainer)

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        # Lightning raises SIGTERMException itself when the signal came outside a training batch (validation);
        # the state is that of a finished step. The caller turns it into ``self.stopped`` (raising here would
        # skip Lightning's own teardown).
        if isinstance(exception, SIGTERMException) and self.received is not None:
            self.stopped = self._error(trainer, self._save(trainer))
        self._restore()

    def _stop(self, trainer: L.Trainer) -> None:
        checkpoint = self._save(trainer)
        self._restore()
        raise self._error(trainer, checkpoint)

    def _error(self, trainer: L.Trainer, checkpoint: str | None) -> RunInterrupted:
        assert self.received is not None  # called only once a signal was recorded
        name = signal.Signals(self.received).name
        return RunInterrupted(name, self.received, checkpoint, trainer.current_epoch, trainer.global_step)

    @staticmethod
    def _save(trainer: L.Trainer) -> str | None:
        folders = [cb.dirpath for cb in trainer.checkpoint_callbacks if isinstance(cb, ModelCheckpoint) and cb.dirpath]
        if not folders:
            log.warning("interrupted, but this run has no ModelCheckpoint callback: nothing was saved")
            return None
        path = Path(folders[0]) / f"{ModelCheckpoint.CHECKPOINT_NAME_LAST}{ModelCheckpoint.FILE_EXTENSION}"
        trainer.save_checkpoint(path)  # Lightning writes checkpoints atomically (temporary file, then rename)
        return str(path)


@contextmanager
def terminate_raises() -> Iterator[None]:
    """Inside the block, SIGTERM raises ``SystemExit(143)`` instead of ending the process on the spot (Python's
    default), so ``finally`` clauses and context managers clean up (a half-built cache's staging folder).
    Where a handler is already installed (Lightning's, during a fit), or off the main thread, nothing changes."""
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGTERM) not in (
            signal.SIG_DFL, None):
        yield
        return

    def stop(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
