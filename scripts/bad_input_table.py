"""Runs every bad input we know of through the real commands; writes the table in docs/reliability.md.

    python scripts/bad_input_table.py                        # every case: the table in docs/reliability.md
    python scripts/bad_input_table.py --only "ckpt_path" --out /tmp/r.md --json /tmp/r.json

The cases: distill-train's bad values and presets (tests/bad_values.py), its bad files, folders and runs
(tests/train_inputs.py), and the other tools' bad folders and files (tests/tool_inputs.py). For each: the exit
code, the message line, the wall time to fail (the process start included), whether the message is the one
promised, and whether anything trained (a new checkpoint or a teacher in the cache would say so).
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests import tool_inputs, train_inputs  # noqa: E402
from tests.bad_values import BAD_PRESETS, BAD_VALUES  # noqa: E402

BIN = Path(sys.executable).parent  # the console scripts of the environment running this


@dataclass
class Row:
    id: str
    command: str
    args: list[str]  # "{scratch}" / "{path}" filled in when run
    expected: str  # a regular expression the message must match
    build: Callable[[Path], Any] | None = None  # makes the case's files; returns what must stay alive


def rows() -> list[Row]:
    table = [Row(" ".join(args), "distill-train", args, message) for args, message in [*BAD_PRESETS, *BAD_VALUES]]
    table += [Row(case.id, "distill-train", case.args, re.escape(case.message), case.build)
              for case in train_inputs.CASES]
    table += [Row(case.id, case.command, list(case.args), re.escape(case.message), tool_build(case))
              for case in tool_inputs.CASES]
    return table


_trained_run: Path | None = None


def trained_run(scratch_root: Path) -> Path:
    """One tiny finished run that the tool cases copy and spoil (trained once per call of this script)."""
    global _trained_run
    if _trained_run is None:
        root = scratch_root / "trained"
        result = subprocess.run([str(BIN / "distill-train"), *tool_inputs.TINY_RUN, f"paths.cache_dir={root / 'cache'}",
                                 f"hydra.run.dir={root / 'run'}"], cwd=root.parent, capture_output=True, text=True,
                                timeout=600)
        if result.returncode:
            sys.exit(f"error: the tiny run the tool cases start from failed:\n{result.stderr[-2000:]}")
        _trained_run = root / "run"
    return _trained_run


def tool_build(case: Any) -> Callable[[Path], Any]:
    def build(scratch: Path) -> Any:
        return case.build(scratch / "cases", trained_run(scratch.parent))
    return build


def message_line(output: str) -> str:
    """The one line that says what was wrong (``error: ...``), without the logger's prefix."""
    lines = [line for line in output.splitlines() if "error: " in line or "Error" in line]
    line = lines[-1] if lines else (output.strip().splitlines() or ["(no output)"])[-1]
    return line.split("error: ", 1)[-1].strip()


def run_row(row: Row, scratch: Path) -> dict[str, Any]:
    built = row.build(scratch) if row.build else None
    path = str(built) if isinstance(built, Path) else ""
    args = [arg.replace("{scratch}", str(scratch)).replace("{path}", path) for arg in row.args]
    if row.command == "distill-train":
        args += ["logger=none", f"hydra.run.dir={scratch / 'run'}", f"hydra.sweep.dir={scratch / 'sweep'}",
                 f"paths.cache_dir={scratch / 'cache'}"]
    elif row.command != "distill-summarize":  # a Hydra app: its own folder lies outside the case's
        args.append(f"hydra.run.dir={scratch / 'own'}")
    checkpoints_before = set(scratch.rglob("*.ckpt"))
    start = time.perf_counter()
    result = subprocess.run([str(BIN / row.command), *args], cwd=scratch, capture_output=True, text=True, timeout=600)
    seconds = time.perf_counter() - start
    if built is not None and hasattr(built, "close"):  # a lock held for the case: released
        built.close()
    output = result.stdout + result.stderr
    trained = bool(set(scratch.rglob("*.ckpt")) - checkpoints_before) or any(scratch.glob("cache/teachers/*/*.json"))
    message = message_line(output).replace(str(scratch), "…")  # the case's scratch folder, as in the args column
    return {"id": row.id, "command": row.command, "args": row.args, "exit_code": result.returncode,
            "seconds": round(seconds, 2), "message": message, "trained": trained, "traceback": "Traceback" in output,
            "as_promised": re.search(row.expected, message) is not None}


START, END = "<!-- bad-input-table:start -->", "<!-- bad-input-table:end -->"


def shown_args(row: dict[str, Any]) -> str:
    return " ".join(row["args"]).replace("{scratch}", "…").replace("{path}", "<case>")


def table(results: list[dict[str, Any]]) -> str:
    commands = sorted({r["command"] for r in results})
    lines = [
        f"{len(results)} bad inputs across {len(commands)} commands ({', '.join(commands)}), each run through the "
        "real command by `python scripts/bad_input_table.py`: the config values of `tests/bad_values.py`, the "
        "files, folders and runs of `tests/train_inputs.py` and `tests/tool_inputs.py` (`…` is the case's "
        "scratch folder, `<case>` the spoilt file or folder it builds). *Time* is the wall time of the whole "
        "command, Python's start-up and imports included; *trained* says whether anything (a teacher, a "
        "checkpoint) was trained before the error.",
        "",
        "| case | command and input | exit | time (s) | trained | message |",
        "|---|---|---:|---:|---|---|",
    ]
    for row in results:
        message = row["message"].replace("|", "\\|")
        args = shown_args(row).replace("|", "\\|")
        lines.append(f"| {row['id'].replace('|', '/')} | `{row['command']} {args}` | {row['exit_code']} | "
                     f"{row['seconds']:.1f} | {'yes' if row['trained'] else 'no'} | {message} |")
    bad = [r for r in results if r["exit_code"] != 2 or r["trained"] or r["traceback"] or not r["as_promised"]]
    lines += ["", f"All {len(results)} exit with code 2 and their promised one-line message, without a traceback, "
              "before anything trained." if not bad else
              f"**Not as promised**: {', '.join(r['id'] for r in bad)}."]
    return "\n".join(lines)


def write_doc(path: Path, results: list[dict[str, Any]]) -> None:
    """Replace the table between the markers of ``path``; the prose around it is written by hand."""
    from distill.io import atomic_write

    text = path.read_text()
    head, rest = text.split(START, 1)
    tail = rest.split(END, 1)[1]
    atomic_write(path, lambda tmp: tmp.write_text(f"{head}{START}\n{table(results)}\n{END}{tail}"))


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "reliability.md")
    parser.add_argument("--json", type=Path, default=ROOT / "docs" / "results" / "bad_input.json")
    parser.add_argument("--only", default=None, help="run only the cases whose id contains this text")
    args = parser.parse_args()
    from distill.io import write_json

    chosen = [row for row in rows() if args.only is None or args.only in row.id]
    results = []
    with tempfile.TemporaryDirectory() as scratch_root:
        for index, row in enumerate(chosen):
            scratch = Path(scratch_root) / f"case{index}"
            scratch.mkdir()
            result = run_row(row, scratch)
            results.append(result)
            flag = "" if result["as_promised"] and result["exit_code"] == 2 else "  <-- not as promised"
            print(f"{result['exit_code']:>4} {result['seconds']:6.1f}s  {row.command:<17} {row.id[:40]:<40} "
                  f"{result['message'][:70]}{flag}", flush=True)
    write_json(args.json, results)
    write_doc(args.out, results)
    print(f"wrote {args.out} and {args.json}")


if __name__ == "__main__":
    main()
