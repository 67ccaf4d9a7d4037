"""A run folder's files read back (its Hydra config, summaries, exported descriptions), each refused with one line
that names the file when it is not what distill-train writes: distill-eval, distill-compress and
distill-summarize all read runs they did not make.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from distill.errors import ConfigError, quoted
from distill.io import read_json

# What every config distill-train composes holds, so a .hydra/config.yaml without them was written by another app:
# distill-eval and distill-compress rebuild a run's data and models from all of them, distill-summarize reads two.
RUN_CONFIG_KEYS = ("stage", "loss", "student.name", "teacher.name", "data._target_")
# Said with every refusal of a run's file: these files are written by Hydra and distill-train, never by hand.
# What an exported model's description must name: a .json without them was written by something else.
DESCRIPTION_KEYS = {"architecture": (str, "a timm name"), "model_kwargs": (dict, "an object"),
                    "weights": (str, "a file name")}
RUN_FILE_FIX = "restore the file, or move its run folder out of the way"


def yaml_problem(error: Exception) -> str:
    """A YAML error in one line ("expected ',' or ']' at line 2, column 1"); PyYAML's own text spans several."""
    mark = getattr(error, "problem_mark", None)
    problem = getattr(error, "problem", None) or str(error)
    return f"{problem} at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else problem


def read_yaml(path: Path, expected: type[dict] | type[list]) -> Any:
    """The mapping or list (``expected``) that the YAML file ``path`` holds; None when there is no such file."""
    if not path.is_file():
        return None
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        raise ConfigError(f"{path} is not valid YAML ({yaml_problem(error)}); {RUN_FILE_FIX}") from None
    if data is None:
        raise ConfigError(f"{path} is empty; {RUN_FILE_FIX}")
    if not isinstance(data, expected):
        raise ConfigError(f"{path} holds a {type(data).__name__}, not a {'mapping' if expected is dict else 'list'}; "
                          f"{RUN_FILE_FIX}")
    return data


def read_json_object(path: Path) -> dict[str, Any]:
    """The JSON object the file ``path`` holds (a run's metrics.json, report.json, an exported model's .json)."""
    try:
        data = read_json(path)
    except (OSError, ValueError) as error:  # json.JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise ConfigError(f"{path} is not valid JSON ({error}); {RUN_FILE_FIX}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} holds a JSON {type(data).__name__}, not an object; {RUN_FILE_FIX}")
    return data


def lacking_keys(config: dict[str, Any], keys: tuple[str, ...]) -> list[str]:
    """The dotted ``keys`` that ``config`` has no value for."""
    lacking = []
    for key in keys:
        node: Any = config
        for part in key.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if node is None:
            lacking.append(key)
    return lacking


def read_run_config(folder: Path, keys: tuple[str, ...] = RUN_CONFIG_KEYS) -> dict[str, Any]:
    """The ``.hydra/config.yaml`` of the run ``folder``, checked to be one distill-train composed (to hold ``keys``)."""
    path = folder / ".hydra" / "config.yaml"
    config = read_yaml(path, dict)
    if config is None:
        raise ConfigError(f"{folder} is not a distill run folder (no .hydra/config.yaml); give a folder made by "
                          "distill-train, e.g. outputs/distill/<date_time>")
    lacking = lacking_keys(config, keys)
    if lacking:
        raise ConfigError(f"{folder} is not a distill run: its .hydra/config.yaml has no {', '.join(lacking)} (a run "
                          "of another application?); give folders that distill-train made")
    return config


def read_description(json_path: Path) -> dict[str, Any]:
    """The description an exported model's .json holds, checked to name its architecture, kwargs and weights."""
    if not json_path.is_file():
        what = "is a folder" if json_path.is_dir() else "does not exist"
        raise ConfigError(f"{json_path} {what}; give an exported model's .json (distill-train writes student.json)")
    description = read_json_object(json_path)
    lacking = [f"{key} ({meaning})" for key, (kind, meaning) in DESCRIPTION_KEYS.items()
               if not isinstance(description.get(key), kind)]
    if lacking:
        raise ConfigError(f"{json_path} lacks {', '.join(lacking)}, so it does not describe an exported model "
                          "(distill-train writes student.json with these beside student.safetensors)")
    return description


def weights_path(json_path: Path, description: dict[str, Any]) -> Path:
    """The weights file the description names; it lies beside the .json."""
    path = json_path.parent / description["weights"]
    if not path.is_file():
        raise ConfigError(f"{json_path} names the weights file {path}, which does not exist; keep the .json and "
                          "its .safetensors together")
    return path


EXPORTED_WEIGHTS_FIX = "export the model again or copy the file whole"


def unreadable_weights(path: Path, error: BaseException, fix: str = EXPORTED_WEIGHTS_FIX) -> ConfigError:
    """The one-line refusal of a weights file that does not load, with ``fix`` for where it came from."""
    return ConfigError(f"cannot read weights from {path} ({quoted(error)}): the file is cut short or corrupt; {fix}")


def check_safetensors(path: Path) -> None:
    """Refuse a .safetensors file whose header or length is not whole, read with safetensors' numpy reader: a cut or
    empty file is refused before the imports that rebuilding a model needs (torch, timm, Lightning)."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="numpy"):
            pass
    except (SafetensorError, OSError) as error:
        raise unreadable_weights(path, error) from None


def check_exported(json_path: Path) -> dict[str, Any]:
    """An exported model's .json and its weights file, checked without building the model; the description."""
    description = read_description(json_path)
    check_safetensors(weights_path(json_path, description))
    return description
