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


def test_a_run_refused_before_training_leaves_its_folder_free_for_the_retry(tmp_path):
    """A run refused on its data (before its first step) records its config and error.json; the retry into the same
    folder with the value fixed is a new run, not 'an earlier run that did not finish' to resume."""
    folder = tmp_path / "run"
    shared = [*QUICK, f"hydra.run.dir={folder}", f"paths.cache_dir={tmp_path / 'cache'}", "trainer.max_epochs=1",
              "trainer.limit_train_batches=2", "trainer.limit_val_batches=2", "stage=student"]
    refused = subprocess.run([sys.executable, "-m", "distill.train", *shared, "data=image_folder",
                              f"data.root={tmp_path / 'missing'}"], cwd=tmp_path, capture_output=True, text=True,
                             timeout=300)
    assert refused.returncode == 2, refused.stderr[-2000:]
    assert "image folder(s) not found" in refused.stdout + refused.stderr and (folder / "error.json").is_file()
    retry = subprocess.run([sys.executable, "-m", "distill.train", *shared], cwd=tmp_path, capture_output=True,
                           text=True, timeout=300)
    assert retry.returncode == 0, retry.stderr[-2000:]
    assert (folder / "metrics.json").is_file()
    assert not (folder / "error.json").exists()  # the first attempt's failure is not this run's
    assert json.loads((folder / "run_config.json").read_text())["data"]["_target_"].endswith("DigitsDataModule")


def test_a_run_that_failed_after_it_trained_still_holds_its_folder(tmp_path):
    """error.json beside a checkpoint or a logger's folder is a run that trained: still refused, not overwritten."""
    from distill.reliability.run_folder import check_unused

    for leftover in ("checkpoints/last.ckpt", "csv/version_0/metrics.csv"):
        folder = tmp_path / leftover.split("/")[0]
        for name in ("error.json", "run_config.json", "train.log"):
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            (folder / name).write_text("{}")
        check_unused(folder)  # only what a refused run leaves: free
        (folder / leftover).parent.mkdir(parents=True)
        (folder / leftover).write_text("x")
        with pytest.raises(FolderInUse, match="holds an earlier run that did not finish"):
            check_unused(folder)
