"""Start-up time of the command lines: ``--help``, a bad value, shell completion, against ``import torch``.

    python -m scripts.bench startup                                   # this tree, 5 repeats
    python -m scripts.bench startup --before 9a260e4 --repeats 7      # and an older commit, in alternating turns

Each command runs in a fresh process (``python -m <module> ...``), timed from start to exit; the table gives the
median and the range over the repeats and the ratio to ``python -c "import torch"`` timed in the same turns. With
``--before``, the older commit is checked out in a temporary worktree and run with the same interpreter
(``PYTHONPATH`` points at it), turn by turn with this tree, so both see the same machine load. Prints a table
and writes JSON (``--out``).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from distill.io import write_json

ROOT = Path(__file__).resolve().parents[2]  # the repository

# name: (arguments, the exit code the command must end with: a timing of a command that failed is no timing)
COMMANDS = {
    "python -c 'import torch'": (["-c", "import torch"], 0),
    "distill-train --help": (["-m", "distill.train", "--help"], 0),
    "distill-train optimizer.lr=abc (bad value)": (["-m", "distill.train", "optimizer.lr=abc", "logger=none"], 2),
    "distill-train student=nope (bad preset)": (["-m", "distill.train", "student=nope"], 2),
    "distill-train tab completion (student=)": (["-m", "distill.train", "-sc", "query=bash"], 0),
    "distill-layers --help": (["-m", "distill.layers", "--help"], 0),
    "distill-eval --help": (["-m", "distill.evaluate", "--help"], 0),
    "distill-compress --help": (["-m", "distill.compress.cli", "--help"], 0),
}


def timed(args: list[str], expected: int | None, source: Path, cwd: Path) -> float:
    """Seconds from start to exit of ``python <args>`` with ``source`` first on the path; with ``expected``, a
    command that exits otherwise (or prints a traceback) stops the benchmark."""
    # Bash's completion calls the command with `-sc query=bash` and the line typed so far in COMP_LINE.
    env = {**os.environ, "PYTHONPATH": str(source), "COMP_LINE": "distill-train student=", "COMP_POINT": "22"}
    start = time.perf_counter()
    result = subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    seconds = time.perf_counter() - start
    if expected is not None and (result.returncode != expected or "Traceback" in result.stderr):
        raise SystemExit(f"{' '.join(args)} in {source} exited with {result.returncode} (expected {expected}):\n"
                         f"{result.stderr[-2000:]}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", help="an older commit to time in alternating turns with this tree")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "results" / "startup.json")
    args = parser.parse_args()
    trees = {"now": ROOT}
    with tempfile.TemporaryDirectory() as scratch:
        if args.before:
            old = Path(scratch) / "before"
            subprocess.run(["git", "worktree", "add", "--detach", str(old), args.before], cwd=ROOT, check=True,
                           capture_output=True)
            trees = {"before": old, "now": ROOT}
        try:
            times: dict[str, dict[str, list[float]]] = {tree: {name: [] for name in COMMANDS} for tree in trees}
            for _ in range(args.repeats):
                for name, (command, expected) in COMMANDS.items():
                    for tree, source in trees.items():
                        # The older commit is timed as it behaves (distill-layers --help failed there).
                        times[tree][name].append(timed(command, expected if tree == "now" else None, source,
                                                       Path(scratch)))
        finally:
            if args.before:
                subprocess.run(["git", "worktree", "remove", "--force", str(old)], cwd=ROOT, capture_output=True)
    torch_time = {tree: statistics.median(times[tree]["python -c 'import torch'"]) for tree in trees}
    rows = []
    for name in COMMANDS:
        row: dict[str, object] = {"command": name}
        for tree in trees:
            median = statistics.median(times[tree][name])
            row[tree] = {"median_s": median, "min_s": min(times[tree][name]), "max_s": max(times[tree][name]),
                         "ratio_to_import_torch": median / torch_time[tree]}
        rows.append(row)
    header = "| command | " + " | ".join(f"{tree}: median s [range], x import torch" for tree in trees) + " |"
    lines = [header, "|---|" + "---:|" * len(trees)]
    for row in rows:
        cells = []
        for tree in trees:
            entry = row[tree]
            assert isinstance(entry, dict)
            cells.append(f"{entry['median_s']:.2f} [{entry['min_s']:.2f}, {entry['max_s']:.2f}], "
                         f"{entry['ratio_to_import_torch']:.2f}x")
        lines.append(f"| {row['command']} | " + " | ".join(cells) + " |")
    print("\n".join(lines))
    write_json(args.out, {"repeats": args.repeats, "before": args.before, "rows": rows})
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
