"""The benchmark's rows and settings: every loss preset (its warm-ups scaled to the schedule), the schemes,
the student alone; the Fashion-MNIST setting of this machine and the CIFAR-100 CRD setting (the methods command,
methods.py, trains them)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TypedDict

import yaml

ROOT = Path(__file__).resolve().parents[2]  # the repository

# The presets' epoch counts (init stages, warm-ups) come from the 240-epoch CIFAR schedule of RepDistiller and
# mdistiller; a shorter schedule scales them by the same fraction (a non-zero count stays at least 1).
REFERENCE_EPOCHS = 240
EPOCH_KEYS = ("hint_only_epochs", "warmup_epochs", "lambda_epochs")
NOT_ROWS = {"ce": "cross-entropy alone is the student-alone row",
            "kd_per_teacher": "KD to each of two teachers; the ensemble row is the several-teacher scheme"}


@dataclass
class Method:
    name: str
    overrides: list[str]
    # For the estimate: trainings per seed (a chain trains each link) and the cost of one step of all of them,
    # in student steps and teacher forward passes (a scheme's smaller models in fractions of those).
    runs_per_seed: int = 1
    student_steps: float = 1.0
    teacher_forwards: float = 1.0
    extra_step_seconds: float = 0.0  # a loss whose own work adds to both (CRD's memory banks, VID's regressors)
    # When the teacher-output cache serves the row: its builds for teachers trained inside a seed (an assistant,
    # an earlier generation), per seed, and for teachers trained once for the row (the ensemble's), in builds of
    # the benchmark teacher's cache; and teachers trained once for the row, in trainings of the benchmark teacher.
    seed_cache_builds: float = 0.0
    row_cache_builds: float = 0.0
    row_teacher_trainings: float = 0.0
    note: str = ""
    preset: dict | None = None  # the row's loss terms (conf/loss): the planner asks whether the output cache applies


@dataclass(frozen=True)
class Setting:
    """One benchmark setting: the experiment preset, its schedule and its scheme rows."""

    data: str
    experiment: str
    epochs: int
    teacher_epochs: int
    schemes: dict[str, list[str]]
    batches: int | None = None  # training batches per epoch (trainer.limit_train_batches); None: the whole set
    published: tuple[tuple[str, float], ...] = ()  # (row, top-1 %) as printed in the papers, shown beside ours
    extra: tuple[str, ...] = ()
    train_images: int | None = None  # training images after the validation hold-out (cache-build estimate)


W = "{name:small_cnn,kwargs:{width:%d}}"
FMNIST = Setting("Fashion-MNIST", "fmnist_benchmark", epochs=15, teacher_epochs=60, batches=100,
                 train_images=55_000, schemes={
    # A second teacher of another width (its own init); the first is the benchmark's teacher (preset small_cnn).
    "ensemble (w32 + w24) kd": ["loss=kd", f"teachers=[small_cnn,{W % 24}]"],
    "takd chain w32 > w16 > w8, kd": ["loss=kd", f"chain=[small_cnn,{W % 16},{W % 8}]"],
    "born-again x2, kd": ["loss=kd", "generations=2"],
    "dml x2": ["scheme=dml"],
})
# CRD (Tian et al. 2020) Table 1, resnet32x4 -> resnet8x4, as RepDistiller's README lists it; DKD: Zhao et al.
# 2022, Table 1. Every method there is CE + the method alone (no KD term), as our presets are.
CRD_TABLE = (("teacher", 79.42), ("student alone", 72.50), ("kd", 73.33), ("fitnet", 73.50), ("at", 73.44),
             ("sp", 72.94), ("cc", 72.97), ("vid", 73.09), ("rkd", 71.90), ("pkt", 73.64), ("ab", 73.17),
             ("ft", 72.86), ("fsp", 72.62), ("nst", 73.30), ("crd", 75.51), ("dkd", 76.32))
CIFAR100 = Setting("CIFAR-100", "cifar100_crd", epochs=240, teacher_epochs=240, published=CRD_TABLE,
                   extra=("trainer=gpu", "data.download=true", "logger=csv", "test_last=true"), schemes={
    "ensemble (resnet32x4 + resnet56) kd": ["loss=kd", "teachers=[cifar_resnet32x4,cifar_resnet56]"],
    "takd chain resnet32x4 > resnet20 > resnet8x4, kd": ["loss=kd", "scheme=takd"],
    "born-again x2, kd": ["loss=kd", "generations=2"],
    "dml x2": ["scheme=dml"],
})
# The whole Fashion-MNIST grid is about 2 hours on 2 cores at 15 epochs, 6.4 at 60 (--plan): this first sitting
# (about 40 min, the teacher included) has the student alone, two logit methods, five feature methods of
# different kinds (hint, attention, contrastive, relational, probabilistic) and three schemes; the same command
# without --first then trains the rest (resume).
# CRD is not in it: with the reference 16,384 negatives per sample, one epoch took 14 min on the first machine
# when each step gathered two 128 x 16,385 x 128 blocks from the memory banks (1 GB each). distill/losses/crd.py
# now scores every bank row instead, which still leaves CRD the costliest row (EXTRA_STEP_SECONDS).
FIRST_SITTING = ("student alone", "kd", "dkd", "fitnet", "at", "rkd", "pkt",
                 "ensemble (w32 + w24) kd", "born-again x2, kd", "dml x2")
# Seconds a step beyond the estimate's student and teacher costs: the loss's own work, from the 60-epoch grid on
# 2 cores (docs/benchmarks.md: a row's median run less the estimate of a live-teacher row, 210 s, over its
# 6,000 steps). OFD's is its seed 0 (705 s) with the step made 2.3x faster since (commit 13bd5d2).
EXTRA_STEP_SECONDS = {"crd": 0.12, "reviewkd": 0.12, "vid": 0.045, "ft": 0.022, "ab": 0.017, "ofd": 0.035}


class SchemeCost(TypedDict, total=False):
    """The estimate fields of :class:`Method` that a scheme sets."""

    runs_per_seed: int
    student_steps: float
    teacher_forwards: float
    seed_cache_builds: float
    row_cache_builds: float
    row_teacher_trainings: float


# The schemes' costs per step in width-8 student steps and width-32 teacher forward passes: w24 ≈ 0.56 of w32's
# MACs, w16 ≈ 0.25, w8 ≈ 0.07; a width-16 student step ≈ 2 width-8 ones (fixed per-step overheads dominate at
# this size). Output-cache builds measured: TAKD's w16 assistant 81 s a seed (0.13 of the w32 teacher's 610 s),
# born-again's first generation (w8) 37 s (0.06).
SCHEME_COST: dict[str, SchemeCost] = {
    "ensemble": {"student_steps": 1.0, "teacher_forwards": 1.56, "row_cache_builds": 1.56,
                 "row_teacher_trainings": 0.56},  # the width-24 teacher is trained in the first seed
    "takd": {"runs_per_seed": 2, "student_steps": 3.0, "teacher_forwards": 1.25, "seed_cache_builds": 0.13},
    "born-again": {"runs_per_seed": 2, "student_steps": 2.0, "teacher_forwards": 1.07, "seed_cache_builds": 0.06},
    "dml": {"student_steps": 2.0, "teacher_forwards": 0.0},
}


def reference_weights(terms: dict) -> str:
    """The preset's weights and temperatures as the table used them: "ce 0.1, kd 0.9 (T 4.0)"."""
    parts = []
    for term, options in terms.items():
        options = options if isinstance(options, dict) else {}
        temperature = f" (T {options['temperature']})" if "temperature" in options else ""
        parts.append(f"{term} {options.get('weight', 1.0)}{temperature}")
    return ", ".join(parts)


def loss_methods(epochs: int) -> list[Method]:
    """One row per loss preset, with its reference weights; only epoch counts are scaled to the schedule."""
    methods = []
    for path in sorted((ROOT / "conf" / "loss").glob("*.yaml")):
        if path.stem in NOT_ROWS:
            continue
        terms = loss_preset(path.stem)
        overrides, scaled = [f"loss={path.stem}"], []
        for term, options in terms.items():
            for key in EPOCH_KEYS:
                if isinstance(options, dict) and key in options:
                    value = max(1, round(options[key] * epochs / REFERENCE_EPOCHS)) if options[key] else 0
                    if value == options[key]:
                        continue
                    overrides.append(f"loss.{term}.{key}={value}")
                    scaled.append(f"{key} {options[key]} → {value}")
        note = f"{reference_weights(terms)}" + (f"; scaled: {', '.join(scaled)}" if scaled else "")
        methods.append(Method(path.stem, overrides, extra_step_seconds=EXTRA_STEP_SECONDS.get(path.stem, 0.0),
                              note=note, preset=terms))
    return methods


def grid(setting: Setting, epochs: int) -> list[Method]:
    """Every row for ``epochs`` student epochs (the presets' init stages and warm-ups scaled to them)."""
    methods = [Method("student alone", ["stage=student"], teacher_forwards=0)] + loss_methods(epochs)
    for name, overrides in setting.schemes.items():
        cost = next(v for k, v in SCHEME_COST.items() if name.startswith(k))
        loss = next((o.removeprefix("loss=") for o in overrides if o.startswith("loss=")), None)
        methods.append(Method(name, overrides, **cost, preset=loss_preset(loss) if loss else None))
    return methods


def loss_preset(name: str) -> dict:
    """A loss preset's terms as conf/loss/<name>.yaml gives them."""
    return yaml.safe_load((ROOT / "conf" / "loss" / f"{name}.yaml").read_text()) or {}


def folder_name(method: str) -> str:
    """The method's run folder: "ensemble (w32 + w24) kd" -> ensemble_w32_w24_kd (student alone -> student_alone)."""
    return re.sub(r"[^\w-]+", "_", method).strip("_")
