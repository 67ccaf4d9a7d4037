"""Atomic writes: the whole new file or the old one, with the permissions any new file gets."""

from __future__ import annotations

import os

import pytest

from distill.errors import DiskFull
from distill.io import atomic_write, write_json


def test_a_written_file_gets_the_usual_permissions_not_a_temp_files(tmp_path):
    previous = os.umask(0o022)
    try:
        path = write_json(tmp_path / "metrics.json", {"a": 1})
    finally:
        os.umask(previous)
    assert (path.stat().st_mode & 0o777) == 0o644  # readable by others, as results meant to be shared are


def test_a_write_that_fails_leaves_the_old_file_and_no_temporary_one(tmp_path):
    path = write_json(tmp_path / "report.json", {"old": True})

    def broken(tmp):
        tmp.write_text("half")
        raise OSError(28, "No space left on device")

    with pytest.raises(DiskFull, match=r"disk full: could not write .*report.json \(\d+\.\d MiB free there\)"):
        atomic_write(path, broken)
    assert path.read_text().strip().startswith('{\n  "old": true')
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.json"]
