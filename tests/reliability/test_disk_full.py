"""A full disk (#31 item 5): every file a run writes goes through one write-to-temp, fsync and rename, so a failed
write leaves the previous good file, and the run ends with one line naming the file and the free space."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from distill.errors import DiskFull
from distill.io import atomic_write, write_json

ROOT = Path(__file__).resolve().parents[2]
QUICK = ["teacher=small_cnn", "teacher.train.max_epochs=2", "student=small_cnn", "trainer.max_epochs=1",
         "logger=csv", "~callbacks.progress_bar", "trainer.enable_progress_bar=false", "report.enabled=false"]


def test_a_checkpoint_write_that_fills_the_disk_keeps_the_previous_one_and_says_so(tmp_path):
    run_dir = tmp_path / "run"
    # Writes 1 and 2 are epoch 0's best.ckpt and last.ckpt; the third (epoch 1's first) fills the disk half-way.
    result = subprocess.run([sys.executable, "-m", "scripts.bad_inputs.disk_full", *QUICK, f"hydra.run.dir={run_dir}",
                             f"paths.cache_dir={tmp_path / 'cache'}"], cwd=ROOT, capture_output=True, text=True,
                            timeout=300, env={**os.environ, "DISK_FULL_AT": "3"})
    output = result.stdout + result.stderr
    assert result.returncode == 5, output[-3000:]
    assert "Traceback" not in output
    errors = [line for line in output.splitlines() if "error: disk full" in line]
    assert len(errors) == 1, output[-3000:]
    folder = run_dir / "teacher" / "checkpoints"
    assert f"could not write {folder}/" in errors[0] and "MiB free there" in errors[0] and "resume=auto" in errors[0]
    failed = Path(errors[0].split("could not write ")[1].split(" (")[0])
    assert failed.name in ("best.ckpt", "last.ckpt")
    assert torch.load(failed, weights_only=True)["epoch"] == 0  # the previous good checkpoint, whole
    written = [path for path in run_dir.rglob("*") if path.is_file()]
    assert not [path for path in written if path.name.endswith(".tmp")]  # the half-written file is gone
    assert not [path for path in written if path.stat().st_size == 0 and path.suffix != ".lock"]
    assert "DiskFull" in (run_dir / "error.json").read_text()


@pytest.fixture
def small_disk(tmp_path):
    """A real 1 MiB file system (tmpfs), where the machine allows mounting one (root); skipped elsewhere: the
    injected full disk above covers the same path everywhere."""
    mount = tmp_path / "small"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (not root, or no mount permission)")
    yield mount
    subprocess.run(["umount", "--lazy", str(mount)], check=True)  # lazy: a test failure may leave a file open


def test_a_real_full_disk_keeps_the_previous_file(small_disk):
    checkpoint = small_disk / "last.ckpt"
    atomic_write(checkpoint, lambda tmp: torch.save({"epoch": 0}, tmp))
    summary = write_json(small_disk / "metrics.json", {"acc": 0.5})
    big = torch.zeros(2**19)  # 2 MiB: more than the disk holds; torch reports ENOSPC as a RuntimeError
    with pytest.raises(DiskFull, match=r"could not write .*last.ckpt \(\d+\.\d MiB free there\)"):
        atomic_write(checkpoint, lambda tmp: torch.save({"epoch": 1, "weights": big}, tmp))
    with pytest.raises(DiskFull, match="metrics.json"):
        write_json(summary, {"acc": "x" * 2**21})
    assert torch.load(checkpoint, weights_only=True) == {"epoch": 0}
    assert summary.read_text() == '{\n  "acc": 0.5\n}\n'
    assert sorted(path.name for path in small_disk.iterdir()) == ["last.ckpt", "metrics.json"]
