"""Shared fixtures: configs composed from conf/ exactly as distill-train composes them, sized for tests."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from distill.config import CONF_DIR

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
# Under pytest-xdist (the default: -n 2 in pyproject) each worker shares the cores with the others, so it gets
# one thread: two workers of two OpenMP threads each on two cores spin against each other and run many times
# slower. The variable also reaches the distill-train subprocesses that tests start.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("MKL_NUM_THREADS", "1")
    torch.set_num_threads(1)  # torch is already imported (by distill.config); the variables are for subprocesses

# A fast pair on digits: a wide small CNN teacher and a narrow one as student, two epochs each.
FAST = [
    "teacher=small_cnn",
    "teacher.train.max_epochs=2",
    "student=small_cnn",
    "trainer.max_epochs=2",
    "logger=csv",
    "~callbacks.progress_bar",
    "trainer.enable_progress_bar=false",
    "report.warmup=1",
    "report.repeats=3",
    "report.throughput_batch_size=16",
]


@pytest.fixture(scope="session")
def session_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One cache for the whole session: tests that only need *a* teacher train it once between them."""
    return tmp_path_factory.mktemp("session_cache")


@pytest.fixture
def make_cfg(tmp_path: Path, session_cache: Path) -> Callable[..., DictConfig]:
    """``make_cfg(*overrides, run="a")``: the composed config with its own run folder and the test's own cache.

    ``shared_cache=True`` uses the session's cache instead (for tests that do not check what the cache does).
    """

    def make(*overrides: str, run: str = "run", fast: bool = True, shared_cache: bool = False) -> DictConfig:
        cache = session_cache if shared_cache else tmp_path / "cache"
        paths = [f"paths.output_dir={tmp_path / run}", f"paths.cache_dir={cache}"]
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return compose("train", overrides=[*(FAST if fast else []), *paths, *overrides])

    return make


@pytest.fixture
def script_main(monkeypatch, capsys) -> Callable[..., str]:
    """A script module's ``main()`` run in this process with the given arguments (no Python start and imports per
    call): returns what it printed; a refusal raises SystemExit with its one-line message."""
    def run(module, *args: str) -> str:
        monkeypatch.setattr(sys, "argv", [f"{module.__name__}.py", *args])
        module.main()
        return capsys.readouterr().out
    return run
