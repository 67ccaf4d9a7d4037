"""Runs every bad input we know of through the real commands; writes the table in docs/reliability.md.

    python -m scripts.bad_inputs                        # every case: the table in docs/reliability.md
    python -m scripts.bad_inputs --only "ckpt_path"     # those cases again; the other rows keep their results

The cases: distill-train's bad values and presets (cases_values.py), its bad files, folders and runs
(cases_train.py), and the other tools' bad folders and files (cases_tools.py); a few rows are
outcomes that are not refusals (a full disk, a signal, another folder's cached teacher), each with the exit
code it must have. For each: the exit code, the message line, the wall time (the process start included),
whether it is as promised, and whether anything trained (a new checkpoint or a teacher in the cache says so).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scripts.bad_inputs import cases_tools, cases_train
from scripts.bad_inputs.cases_values import BAD_PRESETS, BAD_VALUES

ROOT = Path(__file__).resolve().parents[2]  # the repository
BIN = Path(sys.executable).parent  # the console scripts of the environment running this


@dataclass
class Row:
    id: str
    command: str
    args: list[str]  # "{scratch}" / "{path}" filled in when run
    expected: str  # a regular expression the message must match
    build: Callable[[Path], Any] | None = None  # makes the case's files; returns what must stay alive
    exit_code: int = 2
    trains: bool = False
    output: str | None = None  # a regular expression another line of the output must match
    module: str | None = None  # run as ``python -m <module>`` instead of the console script
    env: dict[str, str] | None = None


def rows() -> list[Row]:
    table = [Row(" ".join(args), "distill-train", args, message) for args, message in [*BAD_PRESETS, *BAD_VALUES]]
    table += [Row(case.id, "distill-train", case.args, re.escape(case.message), case.build, case.exit_code,
                  case.trains, re.escape(case.output) if case.output else None,
                  case.module, case.env)
              for case in cases_train.CASES]
    table += [Row(case.id, case.command, list(case.args), re.escape(case.message), tool_build(case))
              for case in cases_tools.CASES]
    return table


_trained_run: Path | None = None


def trained_run(scratch_root: Path) -> Path:
    """One tiny finished run that the tool cases copy and spoil (trained once per call of this script)."""
    global _trained_run
    if _trained_run is None:
        root = scratch_root / "trained"
        result = subprocess.run([str(BIN / "distill-train"), *cases_tools.TINY_RUN, f"paths.cache_dir={root / 'cache'}",
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
    """The one line that says what was wrong (``error: ...``, else the last line the logger marks ERROR, else
    the last line), without the logger's prefix."""
    lines = output.splitlines()
    refusals = [line for line in lines if "error: " in line]
    if refusals:
        return refusals[-1].split("error: ", 1)[-1].strip()
    errors = [line for line in lines if "[ERROR] - " in line]
    if errors:
        return errors[-1].split("[ERROR] - ", 1)[-1].strip()
    return (output.strip().splitlines() or ["(no output)"])[-1].strip()


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
    command = [sys.executable, "-m", row.module] if row.module else [str(BIN / row.command)]
    result = subprocess.run([*command, *args], cwd=ROOT if row.module else scratch, capture_output=True, text=True,
                            timeout=600, env={**os.environ, **(row.env or {})})
    seconds = time.perf_counter() - start
    if built is not None and hasattr(built, "close"):  # a lock held for the case: released
        built.close()
    output = result.stdout + result.stderr
    trained = bool(set(scratch.rglob("*.ckpt")) - checkpoints_before) or any(scratch.glob("cache/teachers/*/*.json"))
    message = message_line(output).replace(str(scratch), "…")  # the case's scratch folder, as in the args column
    promised = (re.search(row.expected, message) is not None and result.returncode == row.exit_code
                and trained == row.trains and "Traceback" not in output
                and (row.output is None or re.search(row.output, output) is not None))
    return {"id": row.id, "command": row.command, "args": row.args, "exit_code": result.returncode,
            "seconds": round(seconds, 2), "message": message, "trained": trained, "traceback": "Traceback" in output,
            "expected_exit_code": row.exit_code, "as_promised": promised,
            "runner": f"python -m {row.module}" if row.module else row.command, "env": row.env or {}}


START, END = "<!-- bad-input-table:start -->", "<!-- bad-input-table:end -->"


def shown_args(row: dict[str, Any]) -> str:
    return " ".join(row["args"]).replace("{scratch}", "…").replace("{path}", "<case>")


def table(results: list[dict[str, Any]]) -> str:
    commands = sorted({r["command"] for r in results})
    lines = [
        f"{len(results)} bad inputs across {len(commands)} commands ({', '.join(commands)}), each run through the "
        "real command by `python -m scripts.bad_inputs`: the config values of `scripts/bad_inputs/cases_values.py`, "
        "the files, folders and runs of `scripts/bad_inputs/cases_train.py` and `scripts/bad_inputs/cases_tools.py` "
        "(`…` is the case's scratch folder, `<case>` the spoilt file or folder it builds). The last rows of "
        "distill-train are outcomes that are not refusals: a cached teacher of other images with the same class "
        "names (not reused: exit 0, a teacher trained), a full disk (exit 5), SIGTERM in the teacher (exit 143, "
        "the resume command), more CPU processes than cores (a warning). *Time* is the wall time of the whole "
        "command, Python's start-up and imports included; *trained* says whether anything (a teacher, a "
        "checkpoint) was trained before the answer.",
        "",
        "| case | command and input | exit | time (s) | trained | message |",
        "|---|---|---:|---:|---|---|",
    ]
    for row in results:
        message = row["message"].replace("|", "\\|")
        args = shown_args(row).replace("|", "\\|")
        env = "".join(f"{key}={value} " for key, value in row.get("env", {}).items())
        runner = row.get("runner", row["command"])
        lines.append(f"| {row['id'].replace('|', '/')} | `{env}{runner} {args}` | {row['exit_code']} | "
                     f"{row['seconds']:.1f} | {'yes' if row['trained'] else 'no'} | {message} |")
    refusals = [r for r in results if r["expected_exit_code"] == 2]
    bad = [r for r in results if not r["as_promised"]]
    lines += ["", f"All {len(results)} as promised: the {len(refusals)} refusals exit with code 2 and their one-line "
              "message before anything trained, the other outcomes (exit code 0, 5, 143) with theirs; no traceback."
              if not bad else f"**Not as promised**: {', '.join(r['id'] for r in bad)}."]
    return "\n".join(lines)


def write_doc(path: Path, results: list[dict[str, Any]]) -> None:
    """Replace the table between the markers of ``path``; the prose around it is written by hand."""
    from distill.io import atomic_write

    text = path.read_text()
    head, rest = text.split(START, 1)
    tail = rest.split(END, 1)[1]
    atomic_write(path, lambda tmp: tmp.write_text(f"{head}{START}\n{table(results)}\n{END}{tail}"))


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m scripts.bad_inputs", description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "reliability.md")
    parser.add_argument("--json", type=Path, default=ROOT / "docs" / "results" / "bad_input.json")
    parser.add_argument("--only", default=None, help="run only the cases whose id contains this text; the others "
                        "keep their results from --json")
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
            flag = "" if result["as_promised"] else "  <-- not as promised"
            print(f"{result['exit_code']:>4} {result['seconds']:6.1f}s  {row.command:<17} {row.id[:40]:<40} "
                  f"{result['message'][:70]}{flag}", flush=True)
    if args.only is not None and args.json.is_file():  # the other cases keep their last results: a whole table
        from distill.io import read_json

        fresh = {result["id"]: result for result in results}
        kept = {result["id"]: result for result in read_json(args.json)}
        results = [fresh.get(row.id) or kept[row.id] for row in rows() if row.id in fresh or row.id in kept]
    write_json(args.json, results)
    write_doc(args.out, results)
    print(f"wrote {args.out} and {args.json}")


if __name__ == "__main__":
    main()
