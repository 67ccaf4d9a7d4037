"""The command under a method table's *How this table was made*: the command that makes the table as it stands,
whatever the sittings that trained it were asked for."""

from __future__ import annotations

import shlex
from collections.abc import Collection, Sequence

from scripts.bench.tuned import tuned_name

ROW_OPTIONS = ("--methods", "--tune")  # the options that name rows: the table's own rows replace them


def without_row_options(argv: Sequence[str]) -> list[str]:
    """``argv`` less ``--methods`` and ``--tune`` and the names after them (a name is a word that is neither an
    option nor an override)."""
    words, in_names = [], False
    for word in argv:
        if word in ROW_OPTIONS:
            in_names = True
            continue
        if in_names and not word.startswith("-") and "=" not in word:
            continue
        in_names = False
        words.append(word)
    return words


def table_command(argv: Sequence[str], grid_rows: Collection[str], table_rows: Sequence[str],
                  optional_rows: Sequence[str] = (), tuned: Sequence[str] = ()) -> str:
    """The command that makes the table of ``table_rows`` (in its order) from the grid of ``grid_rows``.

    A table that holds every row of the grid is made by the command without ``--methods`` (it trains every missing
    row), then by one naming the optional rows the table holds, which only ``--methods`` trains (joined by
    ``&&``). A table that holds some of the grid's rows by design (the strong pair at 60 epochs) is made by one
    command naming them. ``tuned`` are the rows with a weight chosen on validation (``--tune``): it trains their
    reference row, its candidates and the row at the chosen weight, so those are not named again.
    """
    base = ["python", "-m", "scripts.bench", "methods", *without_row_options(argv)]
    tune = ["--tune", *tuned] if tuned else []
    from_tuning = {*tuned, *map(tuned_name, tuned)}
    if set(grid_rows) - from_tuning <= set(table_rows):
        optional = [shlex.join([*base, "--methods", *optional_rows])] if optional_rows else []
        return " && ".join([shlex.join([*base, *tune]), *optional])
    named = [row for row in table_rows if row not in from_tuning]
    return shlex.join([*base, "--methods", *named, *tune])
