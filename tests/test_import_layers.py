"""The import picture: no circles, and every import points down the floors below (none runs up).

Every ``import``/``from ... import`` of the framework (``distill``, ``students``, ``teachers``) is read from the
source, those inside functions included, so a lazy import cannot hide a circle. Each module sits on one floor of
``FLOORS``; it may import modules of its own floor or of the floors below. A new module must be given a floor here:
that is the moment to ask where it belongs.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("distill", "students", "teachers")

# Bottom to top. "name" is that module; "name.*" is the module and everything under it. The most specific entry
# decides (an exact name before a package pattern, a longer package before a shorter one).
FLOORS: list[tuple[str, tuple[str, ...]]] = [
    ("foundation: errors, atomic files, measuring, small helpers without a config", (
        "distill", "distill.errors", "distill.io", "distill.ranks", "distill.progress", "distill.epoch_means",
        "distill.measure", "distill.tracking", "distill.wandb_mode", "distill.run_summary", "distill.layer_sizes",
        "distill.cli", "distill.data.sampling", "distill.data.registry", "distill.data.folder_scan",
        "distill.compress.step", "students.*")),
    ("config: composing, validating and reading a run's config and files", (
        "distill.config", "distill.config.schema", "distill.run_files", "distill.reliability.*",
        "distill.compress.checks", "distill.data.identity")),
    ("models and data", (
        "distill.models", "distill.data.*", "distill.export", "distill.feature_taps", "distill.layer_table",
        "distill.config.schemes", "distill.teacher.stored_logits", "distill.teacher.eval_logits", "distill.report",
        "teachers.*")),
    ("losses", ("distill.losses.*",)),
    ("training: the Lightning module and one fit", (
        "distill.module", "distill.fit", "distill.teacher.logits_cache")),
    ("teacher, evaluation, compression", (
        "distill.teacher.*", "distill.evaluation", "distill.compress.*")),
    ("a run: its plan, and what follows training", ("distill.plan", "distill.after_training")),
    ("schemes: several fits arranged", ("distill.schemes.*",)),
    ("commands", ("distill.runner", "distill.train", "distill.evaluate", "distill.summarize", "distill.layers",
                  "distill.compress.cli", "distill.predict")),
    ("the search: trials of whole runs", ("distill.search.*",)),
]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def framework_modules() -> dict[str, Path]:
    return {module_name(path): path for package in PACKAGES for path in sorted((ROOT / package).rglob("*.py"))}


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The framework modules ``name`` imports, at the top or inside functions."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in modules:  # `import distill.data.base` names distill.data.base
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def floor_of(name: str) -> int:
    best: tuple[int, int] | None = None  # (specificity, floor)
    for floor, (_, patterns) in enumerate(FLOORS):
        for pattern in patterns:
            if pattern == name:
                specificity = 1000
            elif pattern.endswith(".*") and (name == pattern[:-2] or name.startswith(pattern[:-1])):
                specificity = len(pattern)
            else:
                continue
            if best is None or specificity > best[0]:
                best = (specificity, floor)
    if best is None:
        raise AssertionError(f"{name} has no floor in tests/test_import_layers.py FLOORS: give it one")
    return best[1]


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    modules = framework_modules()
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def test_every_module_has_a_floor(graph):
    for name in graph:
        floor_of(name)


def test_no_import_runs_up_a_floor(graph):
    upward = [f"{name} (floor {floor_of(name)}: {FLOORS[floor_of(name)][0]}) imports {target} "
              f"(floor {floor_of(target)}: {FLOORS[floor_of(target)][0]})"
              for name, targets in sorted(graph.items()) for target in sorted(targets)
              if floor_of(target) > floor_of(name)]
    assert not upward, "\n".join(upward)


def test_there_is_no_import_circle(graph):
    state: dict[str, str] = {}
    path: list[str] = []

    def visit(name: str) -> None:
        state[name] = "open"
        path.append(name)
        for target in sorted(graph[name]):
            if state.get(target) == "open":
                circle = path[path.index(target):] + [target]
                raise AssertionError("import circle: " + " -> ".join(circle))
            if target not in state:
                visit(target)
        path.pop()
        state[name] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name)


def outside_imports(folders: tuple[str, ...], forbidden: tuple[str, ...]) -> list[str]:
    """``file imports name`` for every import (or module named in a string, as ``python -m tests.x`` would be) of a
    ``forbidden`` top-level package in the Python files under ``folders``."""
    offenders = []
    for folder in folders:
        for path in (ROOT / folder).rglob("*.py"):
            text = path.read_text()
            for node in ast.walk(ast.parse(text)):
                names = ([alias.name for alias in node.names] if isinstance(node, ast.Import)
                         else [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
                offenders += [f"{path.relative_to(ROOT)} imports {n}" for n in names if n.split(".")[0] in forbidden]
            named = re.findall(r"\b(?:{})\.\w+".format("|".join(forbidden)), text)
            file_names = {f"{package}.py" for package in forbidden}
            offenders += [f"{path.relative_to(ROOT)} names {m}" for m in named if m not in file_names]
    return offenders


def test_the_framework_imports_neither_scripts_nor_tests():
    assert not outside_imports(PACKAGES, ("scripts", "tests"))


def test_scripts_do_not_import_tests():
    assert not outside_imports(("scripts",), ("tests",))


def test_the_checks_find_a_circle_and_an_upward_import(tmp_path, monkeypatch):
    """The checks themselves can fail: a made-up graph with a circle and an upward arrow is caught."""
    circle = {"distill.io": {"distill.errors"}, "distill.errors": {"distill.io"}}
    with pytest.raises(AssertionError, match="import circle: distill.errors -> distill.io -> distill.errors"):
        test_there_is_no_import_circle(circle)
    with pytest.raises(AssertionError, match="distill.errors .* imports distill.runner"):
        test_no_import_runs_up_a_floor({"distill.errors": {"distill.runner"}, "distill.runner": set()})


# Modules imported under a name other than their distribution's, where the venv cannot say (not installed here).
OPTIONAL_DISTRIBUTIONS = {"pynvml": "nvidia-ml-py"}


def declared_distributions() -> set[str]:
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = project["dependencies"] + [r for extra in project["optional-dependencies"].values() for r in extra]
    return {re.split(r"[<>=!~\[; ]", requirement, maxsplit=1)[0].lower().replace("_", "-")
            for requirement in requirements}


def test_every_third_party_module_the_code_imports_is_declared_in_pyproject():
    import sys
    from importlib.metadata import packages_distributions

    distributions = packages_distributions()
    ours = {*PACKAGES, "scripts", "tests"}
    imported: dict[str, str] = {}
    for folder in (*PACKAGES, "scripts"):
        for path in (ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                names = ([alias.name for alias in node.names] if isinstance(node, ast.Import)
                         else [node.module] if isinstance(node, ast.ImportFrom) and not node.level and node.module
                         else [])
                for name in names:
                    top = name.split(".")[0]
                    if top not in ours and top not in sys.stdlib_module_names:
                        imported.setdefault(top, str(path.relative_to(ROOT)))
    declared = declared_distributions()
    undeclared = []
    for module, where in sorted(imported.items()):
        candidates = distributions.get(module) or [OPTIONAL_DISTRIBUTIONS.get(module, module)]
        if not {c.lower().replace("_", "-") for c in candidates} & declared:
            undeclared.append(f"{module} (imported by {where}; distribution {candidates})")
    assert not undeclared, undeclared
