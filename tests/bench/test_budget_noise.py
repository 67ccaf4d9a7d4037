"""``python -m scripts.bench budget-noise``: one repeat over its candidates, the table and the JSON it writes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scripts.bench import budget_noise

FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


@pytest.mark.skipif(not FASHION_MNIST.is_dir(), reason="needs Debian's dataset-fashion-mnist (make test installs it)")
def test_one_repeat_measures_every_candidate(script_main, tmp_path, monkeypatch):
    monkeypatch.chdir(Path(__file__).resolve().parents[2])  # it reads conf/compress/none.yaml, as from the repo root
    output = script_main(budget_noise, "--repeats", "2", "--timed-calls", "3", "--out", str(tmp_path / "noise.json"))
    result = json.loads((tmp_path / "noise.json").read_text())
    assert len(result["rows"]) == len(budget_noise.CANDIDATES) and result["pairs"] == 15
    assert all(len(values) == 2 for values in result["medians_ms"].values())
    assert 0 <= result["pairs_flipped"] <= 15 and "pairs whose latency order flips" in output
