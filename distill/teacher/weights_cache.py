"""Teachers trained here are cached under a key of everything that shapes them, and trained once.

The key hashes the teacher's architecture and training recipe, the data config that changes what it
sees, the data itself (distill/data/identity.py: ``data.root`` is not in the key, what it holds is), and the
seed. Entries are published by renaming a finished folder into place, under a file lock,
so concurrent jobs of a sweep wait for the one that trains instead of training again, and a crash never
leaves a half-written entry.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from filelock import FileLock
from omegaconf import DictConfig, OmegaConf
from torch import nn

from distill.config import DATA_LOADING_KEYS
from distill.data.identity import data_identity
from distill.errors import ConfigError
from distill.export import export_model
from distill.io import publish_folder, read_json, write_json
from distill.models import load_weights
from distill.ranks import is_rank_zero

log = logging.getLogger(__name__)

CACHE_FORMAT = 2  # 2: the data's identity joined the key
# Data settings that change speed or where files live, not what the teacher learns (it is evaluated in eval
# mode, so the evaluation batch size cannot change it either).
DATA_KEYS_IGNORED = (*DATA_LOADING_KEYS, "eval_batch_size")
# Trainer settings that change what the teacher learns (a fast_dev_run teacher must not pass for a real one).
TRAINER_KEYS_KEPT = ("fast_dev_run", "limit_train_batches", "precision", "accumulate_grad_batches",
                     "gradient_clip_val", "gradient_clip_algorithm")


def teacher_cache_key(cfg: DictConfig, identity: str | None = None) -> str:
    """The key of the teacher ``cfg`` trains; ``identity``: the data's (``datamodule.identity()``), when the caller
    has the data module already (else it is computed from ``cfg.data``)."""
    teacher = OmegaConf.to_container(cfg.teacher, resolve=True)
    data_cfg = OmegaConf.to_container(cfg.data, resolve=True)
    assert isinstance(teacher, dict) and isinstance(data_cfg, dict), "cfg.teacher and cfg.data are mappings"
    teacher.pop("weights", None)
    data = {k: v for k, v in data_cfg.items() if k not in DATA_KEYS_IGNORED}
    trainer = {key: cfg.trainer.get(key) for key in TRAINER_KEYS_KEPT}
    # The teacher's own seed is in teacher["train"]["seed"]; the run's seed only drives the student.
    recipe = {"format": CACHE_FORMAT, "teacher": teacher, "data": data, "trainer": trainer,
              "data_identity": identity if identity is not None else data_identity(cfg.data)}
    return hashlib.sha256(json.dumps(recipe, sort_keys=True, default=str).encode()).hexdigest()[:16]


class TeacherCache:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser() / "teachers"

    def entry(self, key: str) -> Path:
        return self.root / key

    def has(self, key: str) -> bool:
        return (self.entry(key) / "teacher.json").is_file()

    def load_into(self, key: str, model: nn.Module) -> dict[str, Any]:
        """Load the cached weights into ``model``; return the entry's summary (metrics, origin)."""
        entry = self.entry(key)
        load_weights(model, entry / "teacher.json", role="cached teacher")
        return read_json(entry / "summary.json")

    def _load_readable(self, key: str, model: nn.Module, quarantine: bool) -> dict[str, Any] | None:
        """The cached entry loaded into ``model``; None when there is none or it is damaged (then it is moved
        aside to ``.<key>.broken`` so that it is trained again, and the log says why)."""
        if not self.has(key):
            return None
        try:
            return self.load_into(key, model)
        except (ConfigError, OSError, ValueError, KeyError) as error:
            log.warning("cached teacher %s is unreadable (%s); training it again", self.entry(key),
                        str(error).splitlines()[0][:200])
            if quarantine:
                broken = self.root / f".{key}.broken"
                shutil.rmtree(broken, ignore_errors=True)
                os.replace(self.entry(key), broken)
            return None

    def get_or_train(self, key: str, model: nn.Module, train: Callable[[], dict[str, Any]],
                     architecture: str, model_kwargs: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        """Load the cached teacher into ``model``, or call ``train()`` (which trains ``model``) and cache it.

        Returns the entry's summary and whether this call trained.
        """
        self.root.mkdir(parents=True, exist_ok=True)
        if not is_rank_zero():
            # A DDP worker: it must join rank 0's teacher fit, so it cannot wait on rank 0's lock; it
            # trains alongside (same data, same seed) and leaves publishing the entry to rank 0.
            cached = self._load_readable(key, model, quarantine=False)
            return (cached, False) if cached is not None else (train(), True)
        with FileLock(str(self.root / f"{key}.lock")):
            cached = self._load_readable(key, model, quarantine=True)
            if cached is not None:
                return cached, False
            summary = train()

            def fill(staging: Path) -> None:
                export_model(model, architecture, model_kwargs, staging, stem="teacher")
                write_json(staging / "summary.json", summary)

            self._publish(key, fill)
            return summary, True

    def adopt(self, key: str, folder: Path) -> bool:
        """Put a copy of an entry kept elsewhere (a benchmark's committed teacher) under ``key``, published as a
        trained entry is; False if the cache already has something there (kept: its loader judges it)."""
        self.root.mkdir(parents=True, exist_ok=True)
        with FileLock(str(self.root / f"{key}.lock")):
            if self.entry(key).exists():
                return False
            self._publish(key, lambda staging: shutil.copytree(folder, staging, dirs_exist_ok=True))
            return True

    def _publish(self, key: str, fill: Callable[[Path], object]) -> None:
        publish_folder(self.entry(key), fill)
