"""Teacher-assistant chains (TAKD, Mirzadeh et al. 2020) and born-again generations (Furlanello et al. 2018).

Both distil each model from the previous one: ``chain=[a,b,c]`` distils b from a, then c from b;
``generations=N`` distils N students of the student's architecture, the first from the teacher. Each
link after the teacher is one ordinary run (in ``links/<i>-<name>/``) and is cached under a key of its
own recipe and its teacher's key, so a chain that shares a prefix with an earlier one, or that was
interrupted, trains only the links not yet cached; a second identical run trains nothing.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from torch import nn

from distill.config import fit_config, instantiate_checked, to_dict
from distill.config.schemes import chain_links, check_scheme, scheme_name
from distill.errors import ConfigError
from distill.export import export_model
from distill.io import write_json
from distill.models import create_model, load_weights, model_kwargs
from distill.ranks import is_rank_zero
from distill.reliability.resume import resume_checkpoint
from distill.report import ReportEntry
from distill.schemes.reporting import loss_method, scheme_report
from distill.teacher.ensemble import TeacherEnsemble
from distill.teacher.weights_cache import DATA_KEYS_IGNORED, TRAINER_KEYS_KEPT, TeacherCache, teacher_cache_key
from teachers import build_teacher

log = logging.getLogger("distill")

LINK_FORMAT = 2  # 2: the data's identity joined the key
SingleRun = Callable[[DictConfig, Sequence[str]], dict[str, Any]]


def _digest(recipe: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(recipe, sort_keys=True, default=str).encode()).hexdigest()[:16]


def first_key(cfg: DictConfig, identity: str) -> str:
    """The chain's root: the teacher's cache key, with its weights file (which that key leaves out) when given."""
    return _digest({"teacher": teacher_cache_key(cfg, identity), "weights": cfg.teacher.get("weights")})


def link_cache_key(link_cfg: DictConfig, teacher_key: str, identity: str) -> str:
    """Everything that shapes a distilled link: its teacher's key, its model, loss, optimiser, schedule, data, seed."""
    data = {k: v for k, v in to_dict(link_cfg.data).items() if k not in DATA_KEYS_IGNORED}
    trainer = {key: link_cfg.trainer.get(key) for key in ("max_epochs", "max_steps", *TRAINER_KEYS_KEPT)}
    student = {k: v for k, v in to_dict(link_cfg.student).items() if k != "weights"}
    recipe = {"format": LINK_FORMAT, "teacher_key": teacher_key, "student": student, "loss": to_dict(link_cfg.loss),
              "optimizer": to_dict(link_cfg.optimizer), "scheduler": to_dict(link_cfg.get("scheduler")),
              "data": data, "data_identity": identity, "trainer": trainer, "seed": link_cfg.seed,
              "top_k": OmegaConf.select(link_cfg, "teacher_cache.top_k")}
    return _digest(recipe)


def train_link(link_cfg: DictConfig, model: nn.Module, run_single: SingleRun,
               overrides: Sequence[str]) -> dict[str, Any]:
    """One ordinary distillation run for a link; its exported student is loaded into ``model`` for the cache."""
    link_dir = Path(link_cfg.paths.output_dir)
    summary = run_single(link_cfg, overrides)
    write_json(link_dir / "metrics.json", summary)
    load_weights(model, link_dir / "student.json", role=f"link {link_cfg.student.name}")
    return summary


def link_roles(scheme: str, count: int) -> list[str]:
    """Each model's role in the summary and report: the teacher, assistants or generations, the student last."""
    middle = "generation" if scheme == "born_again" else "assistant"
    return ["teacher"] + [f"{middle}_{i}" for i in range(1, count - 1)] + ["student"]


def run_chain(cfg: DictConfig, overrides: Sequence[str], run_single: SingleRun) -> dict[str, Any]:
    """Distil every link in order (each trained, or reused from the cache); summarise and report them all."""
    check_scheme(cfg)
    scheme = scheme_name(cfg)
    if cfg.get("ckpt_path"):
        raise ConfigError(f"ckpt_path={cfg.ckpt_path} with {scheme}: a run of several models continues with "
                          "resume=auto, which finds each model's own checkpoint (links/<i>-<name>/checkpoints/)")
    links = chain_links(cfg)
    run_dir = Path(cfg.paths.output_dir)
    base = fit_config(cfg, chain=None, generations=1, teacher=links[0])
    datamodule = instantiate_checked(base.data)
    cache = TeacherCache(cfg.paths.cache_dir)
    roles = link_roles(scheme, len(links))
    identity = datamodule.identity()  # the data's, once for every link's key
    key, teacher, models, records, summaries = first_key(base, identity), links[0], [], [], []
    for index, student in enumerate(links[1:], 1):
        link_dir = run_dir / "links" / f"{index}-{student['name']}"
        link_cfg = fit_config(base, teacher=teacher, student=student, seed=cfg.seed + index - 1,
                              ckpt_path=resume_checkpoint(cfg, link_dir, f"{roles[index]} (link {index})"),
                              **{"paths.output_dir": str(link_dir), "report.enabled": False})
        key = link_cache_key(link_cfg, key, identity)
        model = create_model(student["name"], datamodule.num_classes, datamodule.in_chans, student.get("kwargs"),
                             role="student")
        summary, trained = cache.get_or_train(key, model, partial(train_link, link_cfg, model, run_single, overrides),
                                              student["name"], model_kwargs(link_cfg.student, datamodule))
        log.info("%s: link %d (%s) %s", scheme, index, student["name"],
                 "trained now" if trained else f"reused from the cache {cache.entry(key)}")
        records.append({"index": index, "role": roles[index], "architecture": student["name"], "cache_key": key,
                        "trained_now": trained, "test_acc_top1": summary["student"]["test_acc_top1"],
                        "params": summary["student"]["params"], "run_dir": summary["run_dir"]})
        models.append(model.eval())
        summaries.append((summary, trained))
        teacher = {**to_dict(base.teacher), "name": student["name"], "kwargs": student.get("kwargs") or {},
                   "pretrained": False, "weights": str(cache.entry(key) / "teacher.json")}
    first, first_trained = summaries[0]
    teacher_info = {**first["teacher"], "trained_now": bool(first_trained and first["teacher"].get("trained_now"))}
    records.insert(0, {"index": 0, "role": "teacher", "architecture": links[0]["name"],
                       "cache_key": teacher_info.get("cache_key"), "trained_now": teacher_info["trained_now"],
                       "test_acc_top1": teacher_info.get("test_acc_top1"), "params": teacher_info.get("params")})
    trained_links = [r for r in records if r["trained_now"]]
    if not trained_links:
        log.info("%s: every model came from the cache; nothing trained", scheme)
    final, _ = summaries[-1]
    summary = {**final, "run_dir": str(run_dir), "teacher": teacher_info,
               # Only runs of this call have offline wandb runs left to upload; a cached link's were uploaded before.
               "wandb_sync": [command for s, now in summaries if now for command in s.get("wandb_sync", [])]}
    summary["scheme"] = {"name": scheme, "method": scheme_method(scheme, links, cfg), "links": records,
                         "trained_now": len(trained_links)}
    if is_rank_zero():
        summary["exported"] = str(export_model(models[-1], links[-1]["name"],
                                               model_kwargs(OmegaConf.create(links[-1]), datamodule), run_dir,
                                               stem="student", datamodule=datamodule))
        summary["report"] = chain_report(base, links, teacher_info, models, roles, datamodule, run_dir, scheme)
    return summary


def scheme_method(scheme: str, links: list[dict[str, Any]], cfg: DictConfig) -> str:
    if scheme == "born_again":
        return f"born-again x{len(links) - 1} {loss_method(cfg)}"
    return f"chain {'>'.join(link['name'] for link in links)} {loss_method(cfg)}"


def chain_report(cfg: DictConfig, links: list[dict[str, Any]], teacher_info: dict[str, Any], models: list[nn.Module],
                 roles: list[str], datamodule: Any, run_dir: Path, scheme: str) -> dict[str, Any] | None:
    """Every link measured side by side; born-again generations also as their ensemble (mean of probabilities)."""
    if not cfg.report.enabled:
        return None
    datamodule.setup("fit")
    cached = teacher_info.get("cache_entry")
    teacher_cfg = {**links[0], "weights": str(Path(cached) / "teacher.json")} if cached else links[0]
    teacher = build_teacher(teacher_cfg, datamodule.num_classes, datamodule.in_chans, datamodule.input_shape)
    entries = [ReportEntry("teacher", links[0]["name"], teacher.eval())]
    for index, (link, model) in enumerate(zip(links[1:], models), 1):
        entries.append(ReportEntry(roles[index], link["name"], model,
                                   label=f"{roles[index].replace('_', ' ')} (link {index}): {link['name']}"))
    if scheme == "born_again" and len(models) > 1:
        entries.append(ReportEntry("ensemble", f"ensemble of {len(models)} generations", TeacherEnsemble(models)))
    return scheme_report(cfg, entries, datamodule, run_dir, title=f"{scheme}: accuracy vs MACs")
