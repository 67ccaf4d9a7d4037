"""The benchmark command in miniature, so it cannot rot: every method, 1 seed, a few batches (slow)."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_benchmark_grid_in_miniature(tmp_path):
    command = [sys.executable, "scripts/benchmark.py", "--mini", "--out-dir", str(tmp_path / "bench"),
               "--cache-dir", str(tmp_path / "cache"), "--teacher-epochs", "1"]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=1800)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    table = (tmp_path / "bench" / "summary.md").read_text()
    for method in ("baseline (student alone)", "| kd |", "fitnet+kd", "feature_distance", "kd+cc", "sp+kd",
                   "at+kd", "| rkd |", "| pkt |", "| dkd |"):
        assert method in table, method
    assert "Failed runs" not in table
