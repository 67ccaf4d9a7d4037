"""The scheme options of a run's config, read and checked: which scheme, its models, its bad combinations.

Teacher lists and chains name models by preset (``conf/teacher/<name>.yaml``, ``conf/student/<name>.yaml``),
by model name, or as a mapping ``{name: small_cnn, kwargs: {width: 16}}``. Every check here runs before
any data loads, and a failure is one line that names the value and the fix.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from distill.config import CONF_DIR, to_dict
from distill.errors import ConfigError
from distill.models import check_model_name

# What a list entry sets; the rest of ``cfg.teacher`` (its training recipe) is shared by every member.
MODEL_KEYS: dict[str, Any] = {"name": None, "kwargs": {}, "pretrained": False, "weights": None}


def scheme_name(cfg: DictConfig) -> str:
    """Which scheme a config asks for: single (one teacher or an ensemble), chain, born_again or mutual."""
    if cfg.stage == "mutual":
        return "mutual"
    if cfg.get("chain") is not None:
        return "chain"
    if (cfg.get("generations") or 1) > 1:
        return "born_again"
    return "single"


def _preset(group: str, name: str) -> dict[str, Any] | None:
    path = CONF_DIR / group / f"{name}.yaml"
    return to_dict(OmegaConf.load(path)) if path.is_file() else None


def model_entry(entry: Any, key: str, groups: tuple[str, ...]) -> dict[str, Any]:
    """``{name, kwargs, pretrained, weights}`` of one list entry: a preset of ``groups`` (first match), a model
    name, or a mapping."""
    if isinstance(entry, (Mapping, DictConfig)):
        entry = to_dict(entry)
        if not isinstance(entry.get("name"), str):
            raise ConfigError(f"{key}={entry} has no model name; write e.g. {{name: small_cnn, kwargs: {{width: 16}}}}")
    elif isinstance(entry, str) and entry:
        entry = next((p for p in (_preset(g, entry) for g in groups) if p is not None), {"name": entry})
    else:
        raise ConfigError(f"{key}={entry!r} is not a model; give a preset or model name, e.g. small_cnn")
    check_model_name(entry["name"], key)
    return {**MODEL_KEYS, **{k: v for k, v in entry.items() if k in MODEL_KEYS}, **(
        {"train": entry["train"]} if "train" in entry else {})}


def with_model(model_cfg: DictConfig, entry: dict[str, Any]) -> dict[str, Any]:
    """``model_cfg`` (a teacher's or student's config) with its model replaced by ``entry``'s."""
    merged = {**to_dict(model_cfg), **{k: v for k, v in entry.items() if k != "train"}}
    if "train" in entry:
        merged["train"] = OmegaConf.to_container(OmegaConf.merge(merged.get("train", {}), entry["train"]))
    return merged


def teacher_members(cfg: DictConfig) -> list[dict[str, Any]] | None:
    """The full teacher config of every member of ``cfg.teachers``; None when the run has one teacher."""
    entries = cfg.get("teachers")
    if entries is None:
        return None
    return [with_model(cfg.teacher, model_entry(e, f"teachers[{i}]", ("teacher", "student")))
            for i, e in enumerate(entries)]


def chain_links(cfg: DictConfig) -> list[dict[str, Any]]:
    """The models of a chain, teacher first: ``cfg.chain``, or for ``generations=N`` the teacher then N students."""
    if cfg.get("chain") is not None:
        entries = list(cfg.chain)
        return [with_model(cfg.teacher, model_entry(entries[0], "chain[0]", ("teacher", "student")))] + [
            with_model(cfg.student, model_entry(e, f"chain[{i}]", ("student", "teacher")))
            for i, e in enumerate(entries[1:], 1)]
    return [to_dict(cfg.teacher)] + [to_dict(cfg.student)] * int(cfg.generations)


def ensemble_temperature(cfg: DictConfig) -> float:
    """The temperature at which ``mean_probs`` averages: the first loss term's that has one (KD's), else 1."""
    return float(next((term["temperature"] for term in to_dict(cfg.loss).values()
                       if isinstance(term, Mapping) and "temperature" in term), 1.0))


def _listing(value: Any) -> str:
    items = OmegaConf.to_container(value, resolve=True) if isinstance(value, ListConfig) else value
    assert isinstance(items, (list, tuple)), f"expected a list, got {items!r}"
    return "[" + ",".join(str(v) for v in items) + "]"


def check_scheme(cfg: DictConfig) -> None:
    """Refuse scheme options that cannot work, before anything is built."""
    teachers, chain = cfg.get("teachers"), cfg.get("chain")
    weights = OmegaConf.select(cfg, "ensemble.weights")
    generations = cfg.get("generations") or 1
    if teachers is not None and not isinstance(teachers, ListConfig):
        raise ConfigError(f"teachers={teachers} is not a list; write teachers=[small_cnn,cifar_resnet20]")
    if teachers is not None and len(teachers) == 0:
        raise ConfigError("teachers=[] lists no teacher; list the ensemble's teachers, e.g. "
                          "teachers=[small_cnn,cifar_resnet20], or drop the option to use teacher=<preset>")
    if weights is not None and teachers is None:
        raise ConfigError(f"ensemble.weights={_listing(weights)} is set but there is no ensemble; set "
                          "teachers=[...] too, or drop ensemble.weights")
    if weights is not None:
        assert teachers is not None  # refused just above
        if len(weights) != len(teachers):
            raise ConfigError(f"ensemble.weights={_listing(weights)} has {len(weights)} weight(s) for "
                              f"{len(teachers)} teachers {_listing(teachers)}; give one per teacher, e.g. "
                              f"ensemble.weights=[{','.join(['1'] * len(teachers))}]")
        numbers = all(isinstance(w, (int, float)) and not isinstance(w, bool) for w in weights)
        if not numbers or min(weights) < 0 or sum(weights) <= 0:
            raise ConfigError(f"ensemble.weights={_listing(weights)} must be >= 0 with a positive sum, e.g. "
                              f"ensemble.weights=[{','.join(['1'] * len(teachers))}]")
    if chain is not None and (not isinstance(chain, ListConfig) or len(chain) < 2):
        raise ConfigError(f"chain={_listing(chain) if isinstance(chain, ListConfig) else chain} needs at least a "
                          "teacher and a student, e.g. chain=[cifar_resnet32x4,cifar_resnet20,cifar_resnet8x4]")
    if chain is not None and (teachers is not None or generations > 1):
        raise ConfigError("chain=[...] sets every model of the run; drop "
                          + ("teachers=[...]" if teachers is not None else f"generations={generations}"))
    if generations > 1 and teachers is not None:
        raise ConfigError(f"generations={generations} with teachers=[...]: born-again generations start from one "
                          "teacher; drop teachers or set generations=1")
    if cfg.stage == "mutual":
        check_mutual(cfg, teachers, chain, generations)
    elif (scheme_name(cfg) != "single" or teachers is not None) and cfg.stage != "distill":
        raise ConfigError(f"stage={cfg.stage} trains one model without a student's teachers; teachers, chain and "
                          "generations need stage=distill")
    if teachers is not None:
        teacher_members(cfg)
    if chain is not None:
        chain_links(cfg)


def check_mutual(cfg: DictConfig, teachers: Any, chain: Any, generations: int) -> None:
    """Mutual learning trains its peers from scratch: a teacher, a chain or generations would go unused."""
    given = [f"teachers={_listing(teachers)}" if teachers is not None else None,
             f"teacher.weights={cfg.teacher.get('weights')}" if cfg.teacher.get("weights") else None,
             f"chain={_listing(chain)}" if chain is not None else None,
             f"generations={generations}" if generations > 1 else None]
    given = [g for g in given if g]
    if given:
        raise ConfigError(f"stage=mutual trains its peers from scratch without a teacher, but {given[0]} is set; "
                          "drop it (or use stage=distill)")
    if OmegaConf.select(cfg, "compress.steps"):
        raise ConfigError("stage=mutual exports every peer but does not compress them; set compress=none")
