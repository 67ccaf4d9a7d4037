"""Search configs composed as distill-search composes them (conf/search_run.yaml), sized for tests."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from distill.config import CONF_DIR
from tests.conftest import FAST

# Three small candidates on digits, one of them (small_cnn width 24) far over the default student's MACs.
TINY_SEARCH = [
    "search.trials=3", "search.trial_epochs=2",
    "search.budget.metric=macs", "search.budget.limits.macs=default", "search.budget.limits.latency_ms=null",
    "search.budget.runtime=pytorch", "search.budget.repeats=3",
    "search.budget.warmup=1", "search.final.enabled=false", "search.startup_trials=2",
]


@pytest.fixture
def make_search_cfg(tmp_path: Path) -> Callable[..., DictConfig]:
    def make(*overrides: str, space: str = "{small_cnn: {width: [4, 8, 24]}}", run: str = "search") -> DictConfig:
        paths = [f"paths.output_dir={tmp_path / run}", f"paths.cache_dir={tmp_path / 'cache'}"]
        # ~ then +: a dict override alone would be merged into the default space, not replace it
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return compose("search_run", overrides=[*FAST, *TINY_SEARCH, "~search.space", f"+search.space={space}",
                                                    *paths, *overrides])

    return make
