"""Which process of a run this is: under DDP every rank runs the script, and the first one writes shared files."""

from __future__ import annotations

from lightning.pytorch.utilities import rank_zero_only


def is_rank_zero() -> bool:
    """Whether this process is the first of a DDP run (or the only process). Lightning sets
    ``rank_zero_only.rank`` at import and when a strategy starts; its type hints do not declare the attribute."""
    return getattr(rank_zero_only, "rank", 0) == 0
