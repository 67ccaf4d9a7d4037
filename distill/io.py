"""Files written so that a crash mid-write leaves the old file or none, never half a file.

Every file a run writes (checkpoints through ``AtomicCheckpointIO``, summaries, reports, exports, cache
entries) goes through ``atomic_write``; a write that fails for lack of space raises ``DiskFull``, which names
the file and the free space.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from distill.errors import DiskFull

# A write that failed with less than this free on its file system failed for lack of space, whatever the writer
# raised (torch.save reports ENOSPC as a RuntimeError "file write failed").
NEARLY_FULL = 16 * 2**20


def current_umask() -> int:
    """The process's umask (read by setting it, so set it straight back)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: str | Path, write: Callable[[Path], object]) -> Path:
    """Call ``write(tmp_path)`` on a temporary file beside ``path``, then rename it over ``path``.

    Whatever ``write`` returns is ignored.

    The rename is atomic on POSIX file systems, so readers see either the old or the complete new file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp_name)
    try:
        write(tmp_path)
        # mkstemp makes the file private (0600); the result gets the mode any new file gets (0666 less umask).
        os.chmod(tmp_path, 0o666 & ~current_umask())
        with open(tmp_path, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp_path, path)
    except (OSError, RuntimeError) as error:
        tmp_path.unlink(missing_ok=True)  # first: the space it took is what the message reports as free
        full = disk_full(error, path)
        if full is not None:
            raise full from error
        raise
    finally:
        tmp_path.unlink(missing_ok=True)
    return path


def disk_full(error: BaseException, path: Path) -> DiskFull | None:
    """``DiskFull`` for ``path`` when ``error`` came from a lack of space (ENOSPC, a quota, or a nearly full file
    system whatever the writer raised); None when it has another cause."""
    free = free_bytes(path.parent)
    if getattr(error, "errno", None) in (errno.ENOSPC, errno.EDQUOT) or (free is not None and free < NEARLY_FULL):
        return DiskFull(str(path), free)
    return None


def free_bytes(folder: Path) -> int | None:
    """Free bytes on ``folder``'s file system (None when it cannot be read)."""
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


def publish_folder(target: Path, fill: Callable[[Path], object]) -> Path:
    """Call ``fill(staging)`` on a new folder beside ``target``, then rename it to ``target``: readers see the whole
    entry or none. Every cache publishes its entries this way (hold the entry's lock around it).

    The staging folder is removed whatever happens, except after SIGKILL: ``remove_staging`` clears what such a
    publish left.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        fill(staging)
        os.replace(staging, target)
    except OSError as error:
        full = disk_full(error, target)
        if full is not None:
            raise full from error
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def remove_staging(target: Path) -> None:
    """Remove the staging folders of ``target`` a killed ``publish_folder`` left (call it holding the entry's lock)."""
    for stale in target.parent.glob(f".{target.name}.*"):
        shutil.rmtree(stale, ignore_errors=True)


def write_json(path: str | Path, data: Any) -> Path:
    text = json.dumps(data, indent=2, sort_keys=False, default=str) + "\n"
    return atomic_write(path, lambda tmp: tmp.write_text(text))


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text())
