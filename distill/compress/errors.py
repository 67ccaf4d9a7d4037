"""A compression step the user asked for that could not be made: the run fails with it, after keeping the rest."""

from __future__ import annotations

from pathlib import Path

from distill.reliability.errors import RunStopped


class CompressionFailed(RunStopped):
    """A step of ``compress`` failed; the variants made before it are in the report, the traceback in ``details``."""

    code = 4

    def __init__(self, step: str, error: str, details: Path) -> None:
        self.step, self.error, self.details = step, error, details
        super().__init__(f"compression step '{step}' failed: {error} (the variants made before it are kept in "
                         f"the report; traceback in {details})")
