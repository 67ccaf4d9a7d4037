"""``python -m scripts.bench <command> [options]``, from the repository root: the benchmarks, one command each.

A command is the module of this folder with its name (``cache-accuracy``: cache_accuracy.py), run with its own
options (``python -m scripts.bench <command> --help``). The list below reads each module's first docstring line
from its source, so it imports none of them.
"""

from __future__ import annotations

import ast
import difflib
import importlib
import sys
from pathlib import Path

COMMANDS = ("methods", "fit", "compare", "speed", "overhead", "peers", "peer-loop", "startup", "cache-accuracy",
            "mutual", "budget-noise")
PROG = "python -m scripts.bench"


def module_file(command: str) -> Path:
    return Path(__file__).with_name(f"{command.replace('-', '_')}.py")


def summary(command: str) -> str:
    """The first line of the command's module docstring."""
    docstring = ast.get_docstring(ast.parse(module_file(command).read_text(encoding="utf-8"))) or ""
    return docstring.splitlines()[0] if docstring else ""


def usage() -> str:
    width = max(len(command) for command in COMMANDS)
    return "\n".join([f"usage: {PROG} <command> [options]   (from the repository root)", "", "commands:",
                      *(f"  {command:<{width}}  {summary(command)}" for command in COMMANDS), "",
                      f"{PROG} <command> --help lists the command's options."])


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] in (["-h"], ["--help"]):
        print(usage())
        return
    if not args or args[0] not in COMMANDS:
        close = difflib.get_close_matches(args[0], COMMANDS, n=2) if args else []
        problem = (f"unknown command '{args[0]}'" if args else "no command given") + (
            f" (did you mean {' or '.join(close)}?)" if close else "")
        print(f"{usage()}\n\nerror: {problem}; choose from: {', '.join(COMMANDS)}", file=sys.stderr)
        sys.exit(2)  # argparse's exit code for a command line it refuses
    command = args[0]
    # Only the chosen command's module is imported: each pulls in what it times or trains (torch, Lightning).
    module = importlib.import_module(f"scripts.bench.{command.replace('-', '_')}")
    sys.argv = [f"{PROG} {command}", *args[1:]]  # the command's argparse names itself by this in its usage line
    module.main()


if __name__ == "__main__":
    main()
