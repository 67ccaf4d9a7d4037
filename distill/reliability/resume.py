"""Reading checkpoints back safely, and ``resume=auto``: finished runs are skipped, unfinished ones resume.

A sweep started again with the same ``hydra.sweep.dir`` gives every job its old folder: a job whose
``metrics.json`` exists finished and is not run again; one with ``checkpoints/last.ckpt`` continues from it.
"""

from __future__ import annotations

import logging
import zipfile
from pathlib import Path
from typing import Any

import torch

from distill.errors import ConfigError
from distill.io import read_json

log = logging.getLogger("distill")

CHECKPOINT_KEYS = ("state_dict", "epoch", "global_step", "loops")


def check_checkpoint(path: str | Path, option: str = "ckpt_path") -> None:
    """Fail with one line if ``path`` is not a complete Lightning checkpoint (truncated, corrupt, not ours)."""
    path = Path(path).expanduser()
    fix = f"give another checkpoint of the run (checkpoints/best.ckpt, or an earlier {option}), or start over"
    if not zipfile.is_zipfile(path):  # torch saves a zip archive; a truncated one has lost its directory
        raise ConfigError(f"{option}={path} is not a readable checkpoint (truncated or corrupt file); {fix}")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as error:  # torch raises RuntimeError/UnpicklingError/EOFError for damaged archives
        raise ConfigError(f"{option}={path} is not a readable checkpoint ({type(error).__name__}: "
                          f"{str(error).splitlines()[0][:160]}); {fix}") from None
    missing = [key for key in CHECKPOINT_KEYS if key not in checkpoint]
    if missing:
        raise ConfigError(f"{option}={path} is not a Lightning training checkpoint (no {', '.join(missing)}); "
                          "give a run's checkpoints/last.ckpt")


def finished_run(output_dir: Path) -> dict[str, Any] | None:
    """The summary of a run that finished in ``output_dir`` (its ``metrics.json``), or None."""
    summary_file = output_dir / "metrics.json"
    if summary_file.is_file() and not (output_dir / "error.json").is_file():
        return read_json(summary_file)
    return None


def auto_resume_checkpoint(output_dir: Path) -> str | None:
    """``checkpoints/last.ckpt`` of an unfinished run in ``output_dir`` when it is readable; None to start over."""
    last = output_dir / "checkpoints" / "last.ckpt"
    if not last.is_file():
        return None
    try:
        check_checkpoint(last)
    except ConfigError as error:
        log.warning("resume=auto: %s; starting over", error)
        return None
    return str(last)


def resume_command(overrides: list[str], checkpoint: str | None, sweep_dir: str | None) -> str:
    """The command that continues a stopped run (or, in a sweep, every unfinished job of it)."""
    if sweep_dir is not None:
        return f"the same distill-train -m command with: hydra.sweep.dir={sweep_dir} resume=auto"
    kept = [o for o in overrides if not o.lstrip("+~").startswith(("ckpt_path=", "resume="))]
    return " ".join(["distill-train", *kept, f"ckpt_path={checkpoint}" if checkpoint else "resume=auto"])
