"""One run per run folder: a lock held for the whole run, and a folder that holds an earlier run is reused
only on purpose (``resume=auto``, or ``ckpt_path=`` to continue it).

Without them, two runs given the same ``hydra.run.dir`` wrote into one csv log and one checkpoint folder and
both failed late, and a second run into a finished folder mixed its files with the first's (``best-v1.ckpt``).
The lock is ``flock`` on ``<run>/.run.lock``, which holds the owner's pid: the kernel drops it when the process
ends, however it ends (kill -9 included), so there is never a stale lock to clear by hand.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from distill.errors import FolderInUse

LOCK_FILE = ".run.lock"
# What a run leaves in its folder once it has started: a recorded config, checkpoints, or a summary.
EARLIER_RUN = ("run_config.json", "metrics.json", "checkpoints/*.ckpt")
# All that a run refused before training (data not found, a bad value) leaves: its folder is free for the retry
# with the value fixed. Anything more (a checkpoint, a logger's folder) is an earlier run that trained.
REFUSED_RUN_FILES = frozenset({".hydra", LOCK_FILE, "error.json", "run_config.json", "train.log"})


@contextmanager
def run_folder_lock(output_dir: Path) -> Iterator[None]:
    """Hold ``output_dir`` for this process; refuse at once (naming the holder's pid) when another holds it."""
    output_dir.mkdir(parents=True, exist_ok=True)
    handle = open(output_dir / LOCK_FILE, "a+")  # noqa: SIM115 (held open for the whole run, closed below)
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            raise FolderInUse(f"run folder {output_dir} is in use by another run (pid {holder}); wait for it to end, "
                              "or give this run its own folder: hydra.run.dir=<folder>") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        yield
    finally:
        handle.close()  # closing the file drops the lock


def refused_before_training(output_dir: Path) -> bool:
    """True when ``output_dir`` holds only what a run refused before its first step leaves (error.json among it)."""
    if not (output_dir / "error.json").is_file():
        return False
    return {path.name for path in output_dir.iterdir()} <= REFUSED_RUN_FILES


def earlier_run(output_dir: Path) -> str | None:
    """What shows that a run already started in ``output_dir`` (the first file found), or None: also None for a
    run that was refused before it trained, which left nothing to keep or resume."""
    if refused_before_training(output_dir):
        return None
    for pattern in EARLIER_RUN:
        found = sorted(output_dir.glob(pattern))
        if found:
            return str(found[0])
    return None


def check_unused(output_dir: Path) -> None:
    """Refuse a new run into a folder that holds an earlier one: its files would mix with the earlier run's."""
    found = earlier_run(output_dir)
    if found is None:
        return
    state = "finished" if (output_dir / "metrics.json").is_file() else "did not finish"
    raise FolderInUse(f"run folder {output_dir} holds an earlier run that {state} ({found}); to finish or skip it: "
                      "resume=auto; to continue it with other settings: ckpt_path=<its checkpoints/last.ckpt>; "
                      "for a new run: hydra.run.dir=<another folder> (or delete this one)")
