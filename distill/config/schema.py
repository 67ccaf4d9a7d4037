"""Types and ranges of every config value we own, checked before any data loads or model trains.

Hydra composes whatever the command line says (``optimizer.lr=abc`` is a string, ``seed=-1`` an int);
without this pass such values surface as a TypeError deep in torch, or only after the teacher trained.
Each rule names a dotted key; a key a config does not have (``data.val_fraction`` of an image folder) is
skipped. Failures are ``ConfigError``s of one line: the key, the bad value, what is allowed, a close match.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, OmegaConf

from distill.errors import ConfigError, close_matches

_MISSING = object()


@dataclass(frozen=True)
class Rule:
    """What one value may be: a kind (``int``, ``number``, ``bool``, ``choice``) and bounds or choices."""

    key: str
    kind: str
    low: float | None = None
    high: float | None = None
    low_open: bool = False  # True: the value must be strictly greater than ``low``
    high_open: bool = False
    choices: tuple[Any, ...] = ()
    nullable: bool = False
    also: tuple[Any, ...] = ()  # extra values allowed outside the range (``-1`` for "no limit")
    example: str = ""

    def allowed(self) -> str:
        if self.kind == "bool":
            text = "true or false"
        elif self.kind == "choice":
            text = "one of " + ", ".join(str(c) for c in self.choices)
        else:
            bounds = []
            if self.low is not None:
                bounds.append(f"{'>' if self.low_open else '>='} {_number(self.low)}")
            if self.high is not None:
                bounds.append(f"{'<' if self.high_open else '<='} {_number(self.high)}")
            noun = "an integer" if self.kind == "int" else "a number"
            text = noun + (" " + " and ".join(bounds) if bounds else "")
        extras = [str(v) for v in self.also] + (["null"] if self.nullable else [])
        return text + (f" (or {' or '.join(extras)})" if extras else "")

    def problem(self, value: Any) -> str | None:
        """Why ``value`` breaks the rule, or None when it fits."""
        if value is None:
            return None if self.nullable else "must be set"
        if value in self.also and not isinstance(value, bool):
            return None
        if self.kind == "bool":
            return None if isinstance(value, bool) else "is not a boolean"
        if self.kind == "choice":
            return None if value in self.choices else "is not a valid choice"
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return "is not a number" if self.kind == "number" else "is not an integer"
        if self.kind == "int" and not isinstance(value, int):
            return "is not an integer"
        if not math.isfinite(value):
            return "is not finite"
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return "is out of range"
        if self.high is not None and (value >= self.high if self.high_open else value > self.high):
            return "is out of range"
        return None


def _number(value: float) -> str:
    return f"{value:g}"


# The largest loss weight any published preset uses is 3e4 (PKT); 1e6 leaves room and still refuses the
# values that can only be typos (1e30 overflows fp32 the moment it multiplies a loss).
MAX_LOSS_WEIGHT = 1e6
PRECISIONS = ("64-true", "32-true", "16-mixed", "bf16-mixed", "16-true", "bf16-true", "64", "32", "16", "bf16",
              64, 32, 16, "transformer-engine", "transformer-engine-float16")


def optimizer_rules(prefix: str) -> list[Rule]:
    return [
        Rule(f"{prefix}.lr", "number", 0, 10, low_open=True, example=f"{prefix}.lr=0.05"),
        Rule(f"{prefix}.weight_decay", "number", 0, 1, example=f"{prefix}.weight_decay=5e-4"),
        Rule(f"{prefix}.momentum", "number", 0, 1, high_open=True, example=f"{prefix}.momentum=0.9"),
    ]


RULES: list[Rule] = [
    Rule("seed", "int", 0, 2**32 - 1, example="seed=0"),
    Rule("stage", "choice", choices=("distill", "teacher", "student", "mutual")),
    Rule("resume", "choice", choices=(False, True, "auto"), example="resume=auto"),
    Rule("trainer.max_epochs", "int", 1, None, also=(-1,), example="trainer.max_epochs=15"),
    Rule("trainer.max_steps", "int", 1, None, also=(-1,), example="trainer.max_steps=1000"),
    Rule("trainer.precision", "choice", choices=PRECISIONS),
    Rule("trainer.log_every_n_steps", "int", 1, None, example="trainer.log_every_n_steps=10"),
    Rule("trainer.check_val_every_n_epoch", "int", 1, None, nullable=True),
    Rule("trainer.accumulate_grad_batches", "int", 1, None),
    Rule("trainer.gradient_clip_val", "number", 0, None, low_open=True, nullable=True),
    Rule("trainer.deterministic", "choice", choices=(True, False, "warn")),
    Rule("trainer.enable_progress_bar", "bool"),
    Rule("teacher.train.max_epochs", "int", 0, None, example="teacher.train.max_epochs=15"),
    Rule("teacher.train.seed", "int", 0, 2**32 - 1),
    Rule("teacher.pretrained", "bool"),
    Rule("data.batch_size", "int", 1, None, example="data.batch_size=64"),
    Rule("data.eval_batch_size", "int", 1, None, example="data.eval_batch_size=512"),
    Rule("data.num_workers", "int", 0, None, also=("auto",), example="data.num_workers=auto"),
    Rule("data.pin_memory", "bool", also=("auto",)),
    Rule("data.image_size", "int", 1, None, nullable=True),
    Rule("data.val_fraction", "number", 0, 1, low_open=True, high_open=True, example="data.val_fraction=0.1"),
    Rule("data.test_fraction", "number", 0, 1, low_open=True, high_open=True),
    Rule("data.split_seed", "int", 0, 2**32 - 1),
    Rule("data.random_crop_padding", "int", 0, None),
    Rule("data.horizontal_flip", "bool"),
    Rule("data.download", "bool"),
    Rule("data.on_bad_image", "choice", choices=("error", "skip")),
    Rule("teacher_cache.enabled", "bool"),
    Rule("teacher_cache.memory_mapped", "bool"),
    Rule("teacher_cache.top_k", "int", 1, None, nullable=True, example="teacher_cache.top_k=5"),
    Rule("teacher_cache.augmentations", "choice", choices=(True, False, "auto")),
    Rule("teacher_cache.runs_sharing", "int", 1, None, example="teacher_cache.runs_sharing=6"),
    Rule("teacher_cache.max_variants", "int", 1, None, example="teacher_cache.max_variants=256"),
    Rule("report.enabled", "bool"),
    Rule("report.device", "choice", choices=("auto", "cpu", "cuda")),
    Rule("report.warmup", "int", 0, None),
    Rule("report.repeats", "int", 1, None, example="report.repeats=30"),
    Rule("report.throughput_batch_size", "int", 1, None),
    Rule("guard.on_non_finite", "choice", choices=("error", "skip")),
    Rule("guard.max_skipped_batches", "int", 0, None, nullable=True),
    Rule("acceleration.channels_last", "bool"),
    Rule("acceleration.compile_student", "bool"),
    *optimizer_rules("optimizer"),
    *optimizer_rules("teacher.train.optimizer"),
    Rule("generations", "int", 1, None, example="generations=3"),
    Rule("ensemble.aggregate", "choice", choices=("mean_probs", "mean_logits")),
    Rule("mutual.peers", "int", 2, None, example="mutual.peers=2"),
    Rule("mutual.ce_weight", "number", 0, MAX_LOSS_WEIGHT, example="mutual.ce_weight=1"),
    Rule("mutual.kl_weight", "number", 0, MAX_LOSS_WEIGHT, example="mutual.kl_weight=1"),
    Rule("mutual.temperature", "number", 0, 1000, low_open=True, example="mutual.temperature=1"),
]


def loss_rules(loss: DictConfig | None, prefix: str = "loss") -> list[Rule]:
    """Weights, temperatures and epoch counts of every configured term (other options: the term checks)."""
    rules = []
    for name, options in (loss or {}).items():
        if options is None:
            continue
        key = f"{prefix}.{name!s}"
        rules.append(Rule(f"{key}.weight", "number", 0, MAX_LOSS_WEIGHT, example=f"{key}.weight=1.0"))
        for option in options:
            if option == "temperature":
                rules.append(Rule(f"{key}.temperature", "number", 0, 1000, low_open=True,
                                  example=f"{key}.temperature=4"))
            elif option.endswith("_epochs"):
                rules.append(Rule(f"{key}.{option}", "int", 0, None))
            elif option == "label_smoothing":
                rules.append(Rule(f"{key}.label_smoothing", "number", 0, 1, high_open=True))
    return rules


def check_value(cfg: DictConfig, rule: Rule) -> None:
    value = OmegaConf.select(cfg, rule.key, default=_MISSING)
    if value is _MISSING:
        return
    problem = rule.problem(value)
    if problem is None:
        return
    message = f"{rule.key}={value!r} {problem}; expected {rule.allowed()}"
    if rule.kind == "choice" and isinstance(value, str):
        hint = close_matches(value, [str(c) for c in rule.choices])
        message += f" (did you mean {hint}?)" if hint else ""
    elif rule.example:
        message += f", e.g. {rule.example}"
    raise ConfigError(message)


def validate_config(cfg: DictConfig) -> None:
    """Check every value we own; the first bad one raises a one-line ``ConfigError``."""
    for rule in [*RULES, *loss_rules(cfg.get("loss")), *loss_rules(cfg.teacher.train.get("loss"),
                                                                  "teacher.train.loss")]:
        check_value(cfg, rule)
    if cfg.get("stage") == "distill":  # stage=student trains on CE at weight 1; mutual learning on its own terms
        check_something_to_learn(cfg.get("loss"), "loss")
    if cfg.get("stage") in ("distill", "teacher"):
        check_something_to_learn(cfg.teacher.train.get("loss"), "teacher.train.loss")


def check_something_to_learn(loss: DictConfig | None, prefix: str) -> None:
    """A loss whose every term has weight 0 trains nothing, and its "result" would be the initial weights."""
    weights = {name: options.get("weight", 1.0) for name, options in (loss or {}).items() if options is not None}
    zero = all(isinstance(w, (int, float)) and not isinstance(w, bool) and w == 0 for w in weights.values())
    if weights and zero:
        settings = ", ".join(f"{prefix}.{name!s}.weight=0" for name in weights)
        raise ConfigError(f"every term of {prefix} has weight 0 ({settings}): nothing would be learned; give at "
                          "least one term a weight > 0")


def check_monitor(cfg: DictConfig, monitors: list[str]) -> None:
    """``monitor`` must name a metric the run logs (known once the data's number of classes is)."""
    if cfg.get("monitor") not in monitors:
        hint = close_matches(str(cfg.get("monitor")), monitors)
        raise ConfigError(f"monitor={cfg.get('monitor')!r} is not a metric this run logs"
                          + (f" (did you mean {hint}?)" if hint else "") + f"; choose one of {', '.join(monitors)}")


def check_top_k(cfg: DictConfig, num_classes: int) -> None:
    top_k = OmegaConf.select(cfg, "teacher_cache.top_k", default=None)
    if top_k is not None and top_k >= num_classes:
        raise ConfigError(f"teacher_cache.top_k={top_k} keeps every class of this {num_classes}-class data; "
                          f"expected 1 <= top_k < {num_classes}, or teacher_cache.top_k=null to keep all logits")


def run_metrics(stage: str, num_classes: int, loss_terms: Iterable[str]) -> list[str]:
    """The metric names a run of ``stage`` logs (what ``monitor`` may name)."""
    metrics = ["val/acc_top1", "val/loss/ce", "train/loss", "train/acc_top1"]
    metrics += ["val/acc_top5"] if num_classes > 5 else []
    if stage == "distill":
        metrics += ["val/teacher_acc_top1", "val/agreement", *(f"train/loss/{name}" for name in loss_terms)]
    return metrics


def check_trainer(trainer_cfg: DictConfig) -> None:
    """Build the Trainer once without loggers or callbacks: accelerator, devices, precision and strategy are
    checked by Lightning itself, now instead of after the teacher has trained."""
    import logging

    from hydra.utils import instantiate

    quiet = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    level = quiet.level
    quiet.setLevel(logging.WARNING)  # its "GPU available" lines are printed again by the real Trainer
    try:
        instantiate(trainer_cfg, logger=False, callbacks=[], enable_checkpointing=False, enable_progress_bar=False)
    except Exception as error:  # Lightning's MisconfigurationException, ValueError, TypeError
        cause = error.__cause__ or error  # Hydra wraps what the Trainer raised in an InstantiationException
        first_line = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
        raise ConfigError(f"trainer: {first_line} (check trainer.accelerator, trainer.devices, "
                          "trainer.precision and trainer.strategy)") from None
    finally:
        quiet.setLevel(level)
    warn_oversubscribed(trainer_cfg)


def warn_oversubscribed(trainer_cfg: DictConfig) -> None:
    """More CPU processes than cores work, but each step waits on the others: say so with the numbers."""
    import logging
    import os

    devices = trainer_cfg.get("devices")
    if trainer_cfg.get("accelerator") != "cpu" or not isinstance(devices, int) or isinstance(devices, bool):
        return
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if devices > cores:
        logging.getLogger("distill").warning(
            "trainer.devices=%d CPU processes on %d core(s): they take turns on the cores and each step waits for "
            "the slowest; trainer.devices=%d or fewer runs faster", devices, cores, cores)
