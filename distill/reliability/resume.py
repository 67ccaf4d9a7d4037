"""Reading checkpoints back safely, and ``resume=auto``: finished runs are skipped, unfinished ones resume.

A sweep started again with the same ``hydra.sweep.dir`` gives every job its old folder: a job whose
``metrics.json`` exists finished and is not run again; one with ``checkpoints/last.ckpt`` continues from it.
Either only if the folder's run had the config asked for now: each run records its resolved config in
``run_config.json`` when it starts (Hydra rewrites ``.hydra/config.yaml`` on every call, so that file cannot
say what an earlier call trained).
"""

from __future__ import annotations

import logging
import shlex
import zipfile
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from distill.config import DATA_LOADING_KEYS, to_dict
from distill.errors import ConfigError
from distill.io import read_json, write_json

log = logging.getLogger("distill")

CHECKPOINT_KEYS = ("state_dict", "epoch", "global_step", "loops")
RUN_CONFIG = "run_config.json"
# Keys that say where a run is kept, how it is shown or how fast data arrives, not what it trains: a resumed
# run may change them (a new cache folder, another logger, more loader workers).
UNCHECKED = ("resume", "ckpt_path", "paths.", "logger", "callbacks.progress_bar", "trainer.enable_progress_bar",
             *(f"data.{key}" for key in DATA_LOADING_KEYS))


def check_checkpoint(path: str | Path, option: str = "ckpt_path") -> dict[str, Any]:
    """Fail with one line if ``path`` is not a complete Lightning checkpoint (truncated, corrupt, not ours); return
    it (memory-mapped: its tensors are read only when used)."""
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
    return checkpoint


def check_checkpoint_fits(path: str | Path, state: dict[str, Any], model: torch.nn.Module, role: str,
                          name: str) -> None:
    """Fail with one line, before training, if the checkpoint at ``path`` (its ``state_dict``: ``state``) holds
    another model than ``model`` (Lightning would load it after the teacher has trained, and fail there)."""
    saved = {key.removeprefix("student."): value.shape for key, value in state.items() if key.startswith("student.")}
    own = {key: value.shape for key, value in model.state_dict().items()}
    missing, unexpected = sorted(own.keys() - saved.keys()), sorted(saved.keys() - own.keys())
    mismatched = sorted(key for key in own.keys() & saved.keys() if own[key] != saved[key])
    if not (missing or unexpected or mismatched):
        return
    details = [f"{len(missing)} layer(s) missing (e.g. {missing[0]})" if missing else "",
               f"{len(unexpected)} unknown (e.g. {unexpected[0]})" if unexpected else "",
               f"{len(mismatched)} of another shape (e.g. {mismatched[0]}: {tuple(saved[mismatched[0]])} there, "
               f"{tuple(own[mismatched[0]])} here)" if mismatched else ""]
    raise ConfigError(f"ckpt_path={path} holds another model than this run's {role} {name} "
                      f"({'; '.join(d for d in details if d)}); give a checkpoint of this config's run, or the "
                      f"{role}=... it was trained with")


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


def resume_checkpoint(cfg: DictConfig, train_dir: Path, what: str) -> str | None:
    """The checkpoint that ``what`` (a teacher, a chain link, a generation), trained in ``train_dir`` inside the
    run, continues from when the run resumes (``resume=auto``): its readable ``last.ckpt``; None otherwise."""
    if cfg.get("resume") not in (True, "auto"):
        return None
    last = auto_resume_checkpoint(train_dir)
    if last:
        log.info("resume=auto: continuing %s from %s", what, last)
    return last


def resume_command(overrides: list[str], checkpoint: str | None, sweep_dir: str | None, output_dir: Path) -> str:
    """The command that continues a stopped run (or, in a sweep, every unfinished job of it).

    ``ckpt_path=`` only for the run's own model (``<run>/checkpoints/last.ckpt``): a teacher, chain link or
    generation stopped inside the run continues with ``resume=auto``, which finds each one's checkpoint.
    """
    if sweep_dir is not None:
        return f"the same distill-train -m command with: hydra.sweep.dir={sweep_dir} resume=auto"
    kept = [o for o in overrides if not o.lstrip("+~").startswith(("ckpt_path=", "resume=", "hydra.run.dir="))]
    own = checkpoint is not None and Path(checkpoint).resolve() == (output_dir / "checkpoints" / "last.ckpt").resolve()
    # The run's folder by name: without it Hydra would start a new, timestamped one.
    return shlex.join(["distill-train", *kept, f"ckpt_path={checkpoint}" if own else "resume=auto",
                       f"hydra.run.dir={output_dir}"])


def _leaves(node: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a.b.c": value}`` for every leaf of a nested config container."""
    if isinstance(node, dict):
        leaves: dict[str, Any] = {}
        for key, value in node.items():
            leaves.update(_leaves(value, f"{prefix}{key}."))
        return leaves
    return {prefix[:-1]: node}


def _checked(config: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in _leaves(config).items() if not key.startswith(UNCHECKED)}


def record_run_config(cfg: DictConfig, output_dir: Path) -> None:
    """Write the resolved config of the run starting (or continuing) in ``output_dir``."""
    write_json(output_dir / RUN_CONFIG, OmegaConf.to_container(cfg, resolve=True))


def check_same_config(cfg: DictConfig, output_dir: Path) -> None:
    """Fail if the run found in ``output_dir`` was made with another config than ``cfg``.

    Keys present on one side only are not compared (a later version may add a setting with the old behaviour
    as its default); a key in both with another value is an error, listed with both values.
    """
    path = output_dir / RUN_CONFIG
    if not path.is_file():
        log.warning("resume=auto: %s has no %s (a run from before configs were recorded); its config cannot be "
                    "compared with this one", output_dir, RUN_CONFIG)
        return
    before, now = _checked(read_json(path)), _checked(to_dict(cfg))
    changed = [f"{key}: {before[key]!r} there, {now[key]!r} now" for key in sorted(before.keys() & now.keys())
               if before[key] != now[key]]
    if changed:
        shown = "; ".join(changed[:4]) + (f"; and {len(changed) - 4} more" if len(changed) > 4 else "")
        raise ConfigError(f"resume=auto: {output_dir} holds a run of another config ({shown}); give this config "
                          "its own folder (hydra.run.dir=... or hydra.sweep.dir=...), or resume=false to train "
                          "it here from scratch, or ckpt_path=<its last.ckpt> to continue it with the new "
                          "settings on purpose")
