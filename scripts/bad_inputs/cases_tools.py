"""Folders and files that are not what distill-eval, distill-compress, distill-summarize and distill-layers expect:
each case copies one tiny finished run and spoils one thing in the copy (its config, its weights, its description,
its metrics), or gives a path of the wrong kind, with the message the tool must answer with.

Shared by tests/reliability/test_tool_inputs.py and table.py (``python -m scripts.bad_inputs``: the table in
docs/reliability.md).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml

TINY_RUN = ["stage=student", "trainer.max_epochs=1", "trainer.limit_train_batches=2", "logger=csv",
            "~callbacks.progress_bar", "trainer.enable_progress_bar=false", "report.warmup=1", "report.repeats=3",
            "report.throughput_batch_size=16"]


# --- the spoilt inputs: each builder makes its case under ``cases`` from the trained run and returns its path ---

Builder = Callable[[Path, Path], Path]


def run_copy(cases: Path, trained: Path) -> Path:
    return Path(shutil.copytree(trained, cases / "run"))


def foreign_app(cases: Path, trained: Path) -> Path:
    """A Hydra run folder of some other application."""
    folder = cases / "other_app"
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "config.yaml").write_text("foo: 1\n")
    (folder / "results.txt").write_text("not ours\n")
    return folder


def config_without(*keys: str) -> Builder:
    """A run whose .hydra/config.yaml lacks ``keys`` (a config of another shape)."""
    def build(cases: Path, trained: Path) -> Path:
        run = run_copy(cases, trained)
        path = run / ".hydra" / "config.yaml"
        config = yaml.safe_load(path.read_text())
        path.write_text(yaml.safe_dump({key: value for key, value in config.items() if key not in keys}))
        return run
    return build


def replaced(name: str, text: str) -> Builder:
    """A run whose file ``name`` holds ``text``."""
    def build(cases: Path, trained: Path) -> Path:
        run = run_copy(cases, trained)
        (run / name).write_text(text)
        return run
    return build


def truncated(name: str, size: int) -> Builder:
    """A run whose file ``name`` was cut to ``size`` bytes."""
    def build(cases: Path, trained: Path) -> Path:
        run = run_copy(cases, trained)
        path = run / name
        path.write_bytes(path.read_bytes()[:size])
        return run
    return build


def removed(name: str) -> Builder:
    def build(cases: Path, trained: Path) -> Path:
        run = run_copy(cases, trained)
        (run / name).unlink()
        return run
    return build


def description(**changes: object) -> Builder:
    """A run whose student.json has ``changes`` (a value of None drops the key)."""
    def build(cases: Path, trained: Path) -> Path:
        run = run_copy(cases, trained)
        path = run / "student.json"
        data = {**json.loads(path.read_text()), **changes}
        path.write_text(json.dumps({key: value for key, value in data.items() if value is not None}))
        return run
    return build


def missing(cases: Path, trained: Path) -> Path:
    cases.mkdir(exist_ok=True)
    return cases / "nowhere"


def a_file(cases: Path, trained: Path) -> Path:
    cases.mkdir(exist_ok=True)
    path = cases / "notes.txt"
    path.write_text("not a run\n")
    return path


def an_empty_folder(cases: Path, trained: Path) -> Path:
    folder = cases / "empty"
    folder.mkdir(parents=True)
    return folder


def sweep_of(build: Builder) -> Builder:
    """A sweep folder: the trained run as job 0, the spoilt one as job 1."""
    def sweep(cases: Path, trained: Path) -> Path:
        folder = cases / "sweep"
        shutil.copytree(trained, folder / "0")
        spoilt = build(cases / "spoilt", trained)
        shutil.move(spoilt, folder / "1")
        shutil.rmtree(cases / "spoilt")
        return folder
    return sweep


def inside(build: Builder, name: str) -> Builder:
    """The file ``name`` of the case ``build`` makes (e.g. the student.json of a spoilt run)."""
    return lambda cases, trained: build(cases, trained) / name


INVALID_YAML = "stage: [distill\n"
A_LIST = "- a\n- b\n"
BAD_JSON = "{not json"
CUT_JSON = '{"stage": "student", "student": {"test_acc'


@dataclass
class Case:
    id: str
    command: str
    build: Builder
    args: tuple[str, ...]  # "{path}" stands for what ``build`` returns
    message: str  # a part of the one line the command answers with


def eval_runs(id: str, build: Builder, message: str) -> Case:
    return Case(f"eval runs {id}", "distill-eval", build, ("runs=[{path}]",), message)


def eval_model(id: str, build: Builder, message: str, *args: str) -> Case:
    return Case(f"eval model {id}", "distill-eval", build, ("model={path}", "data=digits", *args), message)


def compress(id: str, build: Builder, message: str) -> Case:
    return Case(f"compress {id}", "distill-compress", build, ("run={path}", "compress=int8"), message)


def summarize(id: str, build: Builder, message: str) -> Case:
    return Case(f"summarize {id}", "distill-summarize", build, ("{path}",), message)


def layers(id: str, build: Builder, message: str) -> Case:
    return Case(f"layers {id}", "distill-layers", build, ("data=image_folder", "data.root={path}"), message)


WITHOUT_STUDENT = config_without("student", "data")
CUT_WEIGHTS = truncated("student.safetensors", 10)
EMPTY_WEIGHTS = truncated("student.safetensors", 0)

# Run configs that distill-eval and distill-compress (which rebuild a run's models and data) both refuse.
NOT_A_RUN_CONFIG: list[tuple[str, Builder, str]] = [
    ("foreign app", foreign_app, "is not a distill run"),
    ("config without student", WITHOUT_STUDENT, "has no student.name, data._target_"),
    ("invalid yaml", replaced(".hydra/config.yaml", INVALID_YAML), "is not valid YAML"),
    ("empty config", replaced(".hydra/config.yaml", ""), "config.yaml is empty"),
    ("config is a list", replaced(".hydra/config.yaml", A_LIST), "holds a list"),
]

CASES = [
    *(eval_runs(*case) for case in NOT_A_RUN_CONFIG),
    eval_runs("weights cut to 10 bytes", CUT_WEIGHTS, "cannot read weights from"),
    eval_runs("weights missing", removed("student.safetensors"), "student.safetensors, which does not exist"),
    eval_runs("json invalid", replaced("student.json", BAD_JSON), "student.json is not valid JSON"),
    eval_runs("json lacks keys", description(model_kwargs=None, weights=None), "lacks model_kwargs"),
    eval_runs("json unknown model", description(architecture="small_cnnn"), "did you mean: small_cnn"),
    eval_runs("json wrong kwargs", description(model_kwargs={"width": 16, "num_classes": 10, "in_chans": 1}),
              "do not fit"),
    eval_runs("metrics corrupt", replaced("metrics.json", CUT_JSON), "metrics.json is not valid JSON"),
    eval_runs("missing", missing, "does not exist"),
    eval_runs("a file", a_file, "is a file"),
    eval_model("json a list", inside(replaced("student.json", "[]"), "student.json"), "holds a JSON list"),
    eval_model("json with weights of 0 bytes", inside(EMPTY_WEIGHTS, "student.json"), "cannot read weights from"),
    eval_model("weights cut", inside(CUT_WEIGHTS, "student.safetensors"), "cannot read weights from",
               "architecture=small_cnn"),
    eval_model("unknown architecture", inside(run_copy, "student.safetensors"), "did you mean: small_cnn",
               "architecture=small_cnnn"),
    eval_model("a folder", run_copy, "is a folder"),
    eval_model("missing", missing, "does not exist"),
    *(compress(*case) for case in NOT_A_RUN_CONFIG),
    compress("weights of 0 bytes", EMPTY_WEIGHTS, "cannot read weights from"),
    compress("json invalid", replaced("student.json", BAD_JSON), "student.json is not valid JSON"),
    compress("json lacks keys", description(architecture=None), "lacks architecture"),
    compress("json unknown model", description(architecture="small_cnnn"), "did you mean: small_cnn"),
    compress("missing", missing, "does not exist"),
    compress("a file", a_file, "is a file"),
    summarize("foreign app", foreign_app, "is not a distill run"),
    summarize("config without stage", sweep_of(config_without("stage", "loss")), "has no stage, loss"),
    summarize("invalid yaml", sweep_of(replaced(".hydra/config.yaml", INVALID_YAML)), "is not valid YAML"),
    summarize("empty config", sweep_of(replaced(".hydra/config.yaml", "")), "config.yaml is empty"),
    summarize("config is a list", sweep_of(replaced(".hydra/config.yaml", A_LIST)), "holds a list"),
    summarize("overrides invalid", sweep_of(replaced(".hydra/overrides.yaml", INVALID_YAML)), "is not valid YAML"),
    summarize("metrics corrupt", sweep_of(replaced("metrics.json", CUT_JSON)), "metrics.json is not valid JSON"),
    summarize("report corrupt", sweep_of(replaced("report.json", BAD_JSON)), "report.json is not valid JSON"),
    summarize("missing", missing, "does not exist"),
    summarize("a file", a_file, "is a file"),
    layers("missing", missing, "not found"),
    layers("a file", a_file, "not found"),
    layers("an empty folder", an_empty_folder, "not found"),
]


