"""What a dataset holds, as a short digest: the caches key their entries on it, so data that changed (or a
``data.root`` that points somewhere else) never gets another dataset's teacher or teacher outputs.

Two kinds of fingerprint, both cheap enough to compute at every start:

* **content** (built-in sets: a few files): a SHA-256 of the files' bytes, so the same files give the same
  key on every machine (a committed benchmark teacher stays valid);
* **listing** (image folders: too many files to read): every sample's path relative to the root, label,
  size, modification time and inode. Adding, removing, renaming, replacing or touching a file, or moving images
  between class folders, changes it; a copy of the folders elsewhere gets a new key too (its files have new
  inodes), which costs a retrain, never a wrong answer.

Digests are remembered per process by each file's (path, size, mtime), so a run that asks several times
(teacher cache, output cache, chain links) reads the files once.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

_content_digests: dict[tuple[str, int, int], str] = {}
CHUNK = 1 << 20


def file_digest(path: Path) -> str:
    """SHA-256 of one file's bytes (remembered while its size and mtime stay the same)."""
    stat = path.stat()
    memo = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if memo not in _content_digests:
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            while chunk := handle.read(CHUNK):
                digest.update(chunk)
        _content_digests[memo] = digest.hexdigest()
    return _content_digests[memo]


def content_identity(files: Iterable[Path]) -> str:
    """One digest of the files' contents (their names do not count: a renamed copy is the same data)."""
    digest = hashlib.sha256()
    for path in files:
        digest.update(file_digest(path).encode())
    return "content:" + digest.hexdigest()[:24]


def listing_identity(samples: Iterable[tuple[str, str, int]], root: Path) -> str:
    """One digest of (split, file, label) samples: each file's path relative to ``root``, its label, size, mtime
    and inode (the inode tells a moved file from a rewritten one with the same size and time)."""
    digest = hashlib.sha256()
    for split, path, label in samples:
        stat = os.stat(path)
        relative = os.path.relpath(path, root)
        digest.update(f"{split}\t{relative}\t{label}\t{stat.st_size}\t{stat.st_mtime_ns}\t{stat.st_ino}\n".encode())
    return "listing:" + digest.hexdigest()[:24]


def data_identity(data_cfg: Any) -> str:
    """The identity of the dataset a ``data`` config names (its module is built, no data is loaded)."""
    from distill.config import instantiate_checked

    return instantiate_checked(data_cfg).identity()
