"""The tools that read what other commands made (distill-eval, distill-compress, distill-summarize, distill-layers)
answer a folder or file that is not what they expect with one line on stderr and exit code 2: no traceback,
and nothing written into the folder they refused.

One tiny run (stage=student, one epoch of two batches) is trained for the module; each case of
scripts/bad_inputs/cases_tools.py copies it and spoils one thing in the copy, or gives a path of the wrong kind.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from scripts.bad_inputs.cases_tools import CASES, TINY_RUN, Case

BIN = Path(sys.executable).parent  # the console scripts beside the interpreter of the venv running the tests


def tool(name: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / name), *args], cwd=cwd, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tool_inputs")
    result = tool("distill-train", *TINY_RUN, f"paths.cache_dir={root / 'cache'}", f"hydra.run.dir={root / 'run'}",
                  cwd=root)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    return root / "run"




@dataclass
class Outcome:
    result: subprocess.CompletedProcess
    files_before: dict[str, tuple[int, int]]
    files_after: dict[str, tuple[int, int]]


def files_in(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file below ``folder`` with its size and modification time (empty when it does not exist)."""
    return {str(path.relative_to(folder)): (path.stat().st_size, path.stat().st_mtime_ns)
            for path in sorted(folder.rglob("*")) if path.is_file()} if folder.is_dir() else {}


def run_case(case: Case, folder: Path, trained: Path) -> Outcome:
    cases = folder / "cases"
    path = case.build(cases, trained)
    before = files_in(cases)
    args = [arg.replace("{path}", str(path)) for arg in case.args]
    if case.command != "distill-summarize":  # a Hydra app: its own folder lies outside the case's
        args.append(f"hydra.run.dir={folder / 'own'}")
    result = tool(case.command, *args, cwd=folder)
    return Outcome(result, before, files_in(cases))


@pytest.fixture(scope="module")
def outcomes(request: pytest.FixtureRequest, trained_run: Path,
             tmp_path_factory: pytest.TempPathFactory) -> dict[str, Outcome]:
    """The selected cases, run two at a time: each command waits on its imports more than on a core, and one by one
    they would take this module past two minutes."""
    selected = {item.callspec.params["case"].id for item in request.session.items
                if getattr(item, "callspec", None) and "case" in item.callspec.params}
    chosen = [case for case in CASES if case.id in selected]
    folders = [tmp_path_factory.mktemp("case") for _ in chosen]
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = pool.map(lambda case, folder: run_case(case, folder, trained_run), chosen, folders)
        return {case.id: outcome for case, outcome in zip(chosen, results)}


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_input_that_is_not_what_the_tool_expects_is_refused_in_one_line(case, outcomes):
    outcome = outcomes[case.id]
    stderr = outcome.result.stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert outcome.result.returncode == 2, (outcome.result.stdout + stderr)[-3000:]
    assert "Traceback" not in stderr, stderr[-3000:]
    assert len(lines) == 1 and lines[0].startswith("error:"), stderr[-3000:]
    assert case.message in lines[0], lines[0]
    assert outcome.files_after == outcome.files_before  # nothing written into the folder the tool refused


def test_summarize_refuses_an_output_path_that_is_a_file(trained_run, tmp_path):
    sweep = tmp_path / "sweep"
    shutil.copytree(trained_run, sweep / "0")
    output = tmp_path / "summary.txt"
    output.write_text("mine\n")
    before = files_in(sweep)
    result = tool("distill-summarize", str(sweep), "--output", str(output), cwd=tmp_path)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert len(lines) == 1 and lines[0].startswith("error:") and "is a file" in lines[0], result.stderr
    assert files_in(sweep) == before and output.read_text() == "mine\n"
