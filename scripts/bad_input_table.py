"""Runs every bad value of tests/bad_values.py through the real command; writes docs/reliability.md.

    python scripts/bad_input_table.py                 # the table in docs/reliability.md
    python scripts/bad_input_table.py --out /tmp/r.md

For each value: the exit code, the message line, the wall time to fail (the process start included), and
whether anything trained (a checkpoint folder or a teacher in the cache would say so).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.bad_values import BAD_PRESETS, BAD_VALUES  # noqa: E402


def message_line(output: str) -> str:
    """The one line that says what was wrong (``error: ...``), without the logger's prefix."""
    lines = [line for line in output.splitlines() if "error: " in line or "Error" in line]
    line = lines[-1] if lines else (output.strip().splitlines() or ["(no output)"])[-1]
    return line.split("error: ", 1)[-1].strip()


def try_value(overrides: list[str], scratch: Path) -> dict:
    command = [sys.executable, "-m", "distill.train", *overrides, "logger=none", f"hydra.run.dir={scratch / 'run'}",
               f"hydra.sweep.dir={scratch / 'sweep'}", f"paths.cache_dir={scratch / 'cache'}"]
    start = time.perf_counter()
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    seconds = time.perf_counter() - start
    trained = any(scratch.rglob("*.ckpt")) or (scratch / "cache" / "teachers").exists()
    return {"overrides": overrides, "exit_code": result.returncode, "seconds": round(seconds, 2),
            "message": message_line(result.stdout + result.stderr), "trained": trained,
            "traceback": "Traceback" in result.stdout + result.stderr}


START, END = "<!-- bad-input-table:start -->", "<!-- bad-input-table:end -->"


def table(rows: list[dict]) -> str:
    lines = [
        f"{len(rows)} bad values, each run as `distill-train <value>` on the default config by "
        "`python scripts/bad_input_table.py` (the same list is the parametrised test `tests/test_bad_values.py`). "
        "*Time* is the wall time of the whole command, Python's start-up and imports included; *trained* says "
        "whether anything (a teacher, a checkpoint) was trained before the error.",
        "",
        "| value | exit | time (s) | trained | message |",
        "|---|---:|---:|---|---|",
    ]
    for row in rows:
        message = row["message"].replace("|", "\\|")
        lines.append(f"| `{' '.join(row['overrides'])}` | {row['exit_code']} | {row['seconds']:.1f} | "
                     f"{'yes' if row['trained'] else 'no'} | {message} |")
    bad = [r for r in rows if r["exit_code"] != 2 or r["trained"] or r["traceback"]]
    lines += ["", f"All {len(rows)} exit with code 2, without a traceback, before anything trained." if not bad
              else f"**Not as promised**: {', '.join(' '.join(r['overrides']) for r in bad)}."]
    return "\n".join(lines)


def write_doc(path: Path, rows: list[dict]) -> None:
    """Replace the table between the markers of ``path``; the prose around it is written by hand."""
    text = path.read_text()
    head, rest = text.split(START, 1)
    tail = rest.split(END, 1)[1]
    path.write_text(f"{head}{START}\n{table(rows)}\n{END}{tail}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "reliability.md")
    parser.add_argument("--json", type=Path, default=ROOT / "docs" / "results" / "bad_input.json")
    args = parser.parse_args()
    rows = []
    for overrides, _ in [*BAD_PRESETS, *BAD_VALUES]:
        with tempfile.TemporaryDirectory() as scratch:
            row = try_value(overrides, Path(scratch))
        rows.append(row)
        print(f"{row['exit_code']:>4} {row['seconds']:6.1f}s  {' '.join(overrides):<40} {row['message'][:90]}",
              flush=True)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(rows, indent=1) + "\n")
    write_doc(args.out, rows)
    print(f"wrote {args.out} and {args.json}")


if __name__ == "__main__":
    main()
