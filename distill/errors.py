"""Errors for bad input, raised before any heavy work starts; each names the bad value and the fix."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class ConfigError(ValueError):
    """A configuration value that cannot work: the message says which value and how to fix it."""


class DatasetNotFoundError(FileNotFoundError):
    """A dataset's files are not where the config says; the message names the path and how to get them."""


def close_matches(name: str, candidates: Iterable[str], limit: int = 5) -> str:
    """', '-joined close matches of ``name`` in ``candidates`` (empty string when none are close)."""
    candidates = list(candidates)
    matches = difflib.get_close_matches(name, candidates, n=limit, cutoff=0.6)
    if not matches:  # substring hits help with long timm names ("resnet" -> "resnet18", ...)
        matches = [c for c in candidates if name.lower() in c.lower()][:limit]
    return ", ".join(matches)


def one_line(error: BaseException) -> str:
    """The message of ``error`` for a one-line refusal. An error raised in a DataLoader worker arrives re-raised
    with the worker's traceback as its message; its last line holds the original ``Type: message``."""
    message = str(error)
    if "Original Traceback" in message:
        last = next((line for line in reversed(message.splitlines()) if line.strip()), message)
        return last.split(": ", 1)[1] if ": " in last else last
    return message
