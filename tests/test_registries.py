"""What the registries list, and the documents that must agree with them (never a hand-kept list that goes stale)."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from distill.compress.settings import STEPS  # the settings module registers every step
from distill.data.registry import DATA_MODULES, with_sample_labels
from distill.losses import LOSSES

ROOT = Path(__file__).resolve().parent.parent
CONF = ROOT / "conf"


def preset_names(group: str) -> set[str]:
    return {path.stem for path in (CONF / group).glob("*.yaml")}


def test_every_loss_preset_has_one_row_in_the_methods_table_and_every_row_a_preset():
    text = (ROOT / "docs" / "losses.md").read_text()
    table = text.split("## Methods", 1)[1].split("\n\n", 2)[1]
    rows = re.findall(r"^\| `([a-z_0-9]+)` \|", table, flags=re.MULTILINE)
    assert len(rows) == len(set(rows)), "a preset has two rows"
    assert set(rows) == preset_names("loss")


def test_every_registered_loss_term_is_used_by_a_preset():
    used = set()
    for path in (CONF / "loss").glob("*.yaml"):
        used |= {name.partition("@")[0] for name in (yaml.safe_load(path.read_text()) or {})}
    assert set(LOSSES) - used == set(), "a registered term without a preset in conf/loss/"
    assert used - set(LOSSES) == set(), "a preset names a term nobody registered"


def test_every_data_preset_is_a_registered_data_module_of_that_name():
    for name in preset_names("data"):
        target = yaml.safe_load((CONF / "data" / f"{name}.yaml").read_text())["_target_"]
        assert DATA_MODULES[name].__name__ == target.rpartition(".")[2], name
    assert set(DATA_MODULES) == preset_names("data")
    assert "digits" in with_sample_labels() and "image_folder" in with_sample_labels()


def test_every_compression_step_has_a_preset_that_asks_for_it():
    asked = set()
    for path in (CONF / "compress").glob("*.yaml"):
        asked |= set(yaml.safe_load(path.read_text()).get("steps") or [])
    assert asked == set(STEPS)
