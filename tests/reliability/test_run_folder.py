"""One run per run folder (#31 item 6): a second run into a folder in use is refused at once, naming the holder's
pid; a folder holding an earlier run is reused only by resume=auto or an explicit ckpt_path."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from distill.errors import FolderInUse
from distill.runner import run

ROOT = Path(__file__).resolve().parents[2]
QUICK = ["teacher=small_cnn", "teacher.train.max_epochs=1", "student=small_cnn", "logger=csv",
         "~callbacks.progress_bar", "trainer.enable_progress_bar=false", "report.enabled=false"]


def train(*args: str, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "distill.train", *QUICK, *args], cwd=cwd, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def test_a_second_run_into_a_folder_in_use_is_refused_at_once_naming_the_pid(tmp_path):
    folder = tmp_path / "run"
    shared = [f"hydra.run.dir={folder}", f"paths.cache_dir={tmp_path / 'cache'}"]
    first = train(*shared, "trainer.max_epochs=500", cwd=tmp_path)  # long enough to still hold the folder
    try:
        deadline = time.monotonic() + 120
        while not (folder / "checkpoints").is_dir():  # it holds the lock and trains (its teacher first)
            assert first.poll() is None, first.communicate()[1][-2000:]
            assert time.monotonic() < deadline, "the first run did not start training"
            time.sleep(0.2)
        started = time.monotonic()
        second = subprocess.run([sys.executable, "-m", "distill.train", *QUICK, *shared, "trainer.max_epochs=1"],
                                cwd=tmp_path, capture_output=True, text=True, timeout=120)
        seconds = time.monotonic() - started
        output = second.stdout + second.stderr
        assert second.returncode == 2, output[-2000:]
        lines = [line for line in output.splitlines() if line.strip()]
        assert len(lines) == 1 and f"is in use by another run (pid {first.pid})" in lines[0], output
        assert "hydra.run.dir=" in lines[0]
        assert seconds < 30  # no teacher, no data: refused on start-up
        assert not (folder / "error.json").exists()  # nothing written into the other run's folder
        assert first.poll() is None  # the holder goes on
    finally:
        first.send_signal(signal.SIGTERM)
        first.communicate(timeout=120)


def test_a_folder_with_an_earlier_run_is_reused_only_on_purpose(make_cfg, tmp_path):
    cfg = make_cfg("trainer.max_epochs=1", "report.enabled=false")
    run(cfg)
    folder = Path(cfg.paths.output_dir)
    metrics = (folder / "metrics.json").read_text()
    with pytest.raises(FolderInUse, match=r"holds an earlier run that finished .*resume=auto.*hydra.run.dir="):
        run(make_cfg("trainer.max_epochs=1", "report.enabled=false"))
    assert (folder / "metrics.json").read_text() == metrics
    assert sorted(p.name for p in (folder / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]

    resumed = make_cfg("trainer.max_epochs=1", "report.enabled=false", "resume=auto")
    assert run(resumed) == json.loads(metrics)["monitored"]  # finished: read back, not trained again

    (folder / "metrics.json").unlink()  # now an unfinished run (its checkpoints stay)
    with pytest.raises(FolderInUse, match="holds an earlier run that did not finish"):
        run(make_cfg("trainer.max_epochs=1", "report.enabled=false"))
    last = folder / "checkpoints" / "last.ckpt"
    run(make_cfg("trainer.max_epochs=2", "report.enabled=false", f"ckpt_path={last}"))  # continued on purpose
    assert sorted(p.name for p in (folder / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]
