"""The benchmark's rows and settings: every loss preset (its warm-ups scaled to the schedule), the schemes,
the student alone; the Fashion-MNIST setting of this machine and the CIFAR-100 CRD setting (the methods command,
methods.py, trains them)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
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


class SchemeCost(TypedDict, total=False):
    """The estimate fields of :class:`Method` that a scheme sets."""

    runs_per_seed: int
    student_steps: float
    teacher_forwards: float
    seed_cache_builds: float
    row_cache_builds: float
    row_teacher_trainings: float


@dataclass(frozen=True)
class Setting:
    """One benchmark setting: the experiment preset, its schedule and its scheme rows."""

    name: str  # --setting; the default out-dir is outputs/benchmark_<name> ("fmnist": outputs/benchmark)
    data: str
    experiment: str
    epochs: int
    teacher_epochs: int
    schemes: dict[str, list[str]]
    batches: int | None = None  # training batches per epoch (trainer.limit_train_batches); None: the whole set
    published: tuple[tuple[str, float], ...] = ()  # (row, top-1 %) as printed in the papers, shown beside ours
    extra: tuple[str, ...] = ()
    train_images: int | None = None  # training images after the validation hold-out (cache-build estimate)
    # The loss presets that are rows (None: every preset but NOT_ROWS), and rows beyond the presets and schemes.
    loss_rows: tuple[str, ...] | None = None
    more_rows: dict[str, list[str]] = field(default_factory=dict)
    # Teachers of the same recipe (teacher.train.seed 0, 1, ...): each has its own out-dir and table.
    teacher_seeds: int = 1
    # Seconds of each unit of work on 2 CPU cores, for --plan (the keys of FMNIST_COST); None: no estimate (a GPU).
    costs: Mapping[str, float] | None = None
    scheme_costs: Mapping[str, SchemeCost] | None = None  # None: SCHEME_COST (the small_cnn widths)


# Seconds on 2 CPU cores with nothing else running, for the estimate of --plan (batch 128): a training step of
# the student, a forward pass of the teacher, a training step of that teacher, a validation pass (5,000 images),
# the fixed cost of one run (start-up, two test passes, export, report), a batch of 128 images in the build of
# the teacher-output cache. FMNIST_COST is fitted to the 60-epoch grid of docs/benchmarks.md (a 2-core AMD EPYC;
# the median run of each row): the student alone 78 s, the cached KD rows 76-87 s, the cheapest live-teacher rows
# (feature_distance, SP, PKT, CC) 197-205 s, the teacher 321 s, the first cache build 610 s (50 variants of 55,000
# images). STRONG_COST: steps of cifar_resnet8 (101 ms) and cifar_resnet20 (242 ms) timed on the same machine,
# the teacher's forward pass taken as a third of its step. Expect ± 50 %.
FMNIST_COST = {"student_step": 0.0088, "teacher_forward": 0.022, "teacher_step": 0.048, "validation": 0.25,
               "run": 10.0, "cache_batch": 0.028}
STRONG_COST = {"student_step": 0.101, "teacher_forward": 0.08, "teacher_step": 0.242, "validation": 3.0,
               "run": 20.0, "cache_batch": 0.08}

W = "{name:small_cnn,kwargs:{width:%d}}"
FMNIST = Setting("fmnist", "Fashion-MNIST", "fmnist_benchmark", epochs=15, teacher_epochs=60, batches=100,
                 train_images=55_000, costs=FMNIST_COST, schemes={
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
CIFAR100 = Setting("cifar100", "CIFAR-100", "cifar100_crd", epochs=240, teacher_epochs=240, published=CRD_TABLE,
                   extra=("trainer=gpu", "data.download=true", "logger=csv", "test_last=true"), schemes={
    "ensemble (resnet32x4 + resnet56) kd": ["loss=kd", "teachers=[cifar_resnet32x4,cifar_resnet56]"],
    "takd chain resnet32x4 > resnet20 > resnet8x4, kd": ["loss=kd", "scheme=takd"],
    "born-again x2, kd": ["loss=kd", "generations=2"],
    "dml x2": ["scheme=dml"],
})
# The strong-teacher setting (conf/experiment/fmnist_strong.yaml, where the choices are written down): two
# cifar_resnet20 teachers of one recipe (teacher.train.seed 0 and 1) -> cifar_resnet8. The rows were chosen
# before any distilled run: the logit methods, the feature methods the literature reports gains with on CIFAR
# ResNet pairs, the two-teacher ensemble and a teacher-assistant chain; the student alone also for twice the
# epochs, to show where its curve levels off.
STRONG = Setting(
    "strong", "Fashion-MNIST", "fmnist_strong", epochs=30, teacher_epochs=150, batches=100, train_images=55_000,
    costs=STRONG_COST, teacher_seeds=2, scheme_costs={
        # In cifar_resnet8 steps and cifar_resnet20 forward passes: resnet14 costs about 1.7 resnet8 steps and
        # 0.6 resnet20 forwards; the ensemble's second teacher is the setting's teacher of seed 1 (trained once).
        "ensemble": {"teacher_forwards": 2.0, "row_teacher_trainings": 1.0},
        "takd": {"runs_per_seed": 2, "student_steps": 2.7, "teacher_forwards": 1.6}},
    loss_rows=("kd", "kd_ls", "dkd", "dist", "mlkd", "simkd", "crd", "reviewkd", "fitnet", "ofd"),
    more_rows={"student alone, 60 epochs": ["stage=student", "trainer.max_epochs=60"]},
    schemes={
        # Both teachers of the setting (each cached by its recipe and seed): no teacher is trained for this row.
        "ensemble (resnet20 seeds 0 + 1) kd": [
            "loss=kd", "teachers=[{name:cifar_resnet20,train:{seed:0}},{name:cifar_resnet20,train:{seed:1}}]"],
        "takd chain resnet20 > resnet14 > resnet8, kd": [
            "loss=kd", "chain=[cifar_resnet20,{name:cifar_resnet,kwargs:{depth:14}},cifar_resnet8]"],
    })
SETTINGS = {setting.name: setting for setting in (FMNIST, STRONG, CIFAR100)}
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


def loss_methods(epochs: int, names: tuple[str, ...] | None = None) -> list[Method]:
    """One row per loss preset (``names``, or every one but NOT_ROWS), with its reference weights; only epoch
    counts are scaled to the schedule."""
    methods = []
    for path in sorted((ROOT / "conf" / "loss").glob("*.yaml")):
        if path.stem in NOT_ROWS if names is None else path.stem not in names:
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
    methods = [Method("student alone", ["stage=student"], teacher_forwards=0)]
    for name, overrides in setting.more_rows.items():  # student-alone variants (another schedule)
        epochs_here = next((int(o.split("=")[1]) for o in overrides if o.startswith("trainer.max_epochs=")), epochs)
        methods.append(Method(name, overrides, student_steps=epochs_here / epochs, teacher_forwards=0))
    methods += loss_methods(epochs, setting.loss_rows)
    for name, overrides in setting.schemes.items():
        cost = next(v for k, v in (setting.scheme_costs or SCHEME_COST).items() if name.startswith(k))
        loss = next((o.removeprefix("loss=") for o in overrides if o.startswith("loss=")), None)
        methods.append(Method(name, overrides, **cost, preset=loss_preset(loss) if loss else None))
    return methods


def loss_preset(name: str) -> dict:
    """A loss preset's terms as conf/loss/<name>.yaml gives them."""
    return yaml.safe_load((ROOT / "conf" / "loss" / f"{name}.yaml").read_text()) or {}


def folder_name(method: str) -> str:
    """The method's run folder: "ensemble (w32 + w24) kd" -> ensemble_w32_w24_kd (student alone -> student_alone)."""
    return re.sub(r"[^\w-]+", "_", method).strip("_")


# A setting with several teachers of one recipe keeps each one's runs in <out-dir>/teacher_seed<seed>.
TEACHER_FOLDER = "teacher_seed"


def default_out_dir(setting: Setting, teacher_seed: int = 0) -> Path:
    """outputs/benchmark (the Fashion-MNIST grid), outputs/benchmark_<setting>, and with several teachers of one
    recipe, one folder per teacher: outputs/benchmark_strong/teacher_seed0."""
    folder = ROOT / "outputs" / ("benchmark" if setting.name == "fmnist" else f"benchmark_{setting.name}")
    return folder / f"{TEACHER_FOLDER}{teacher_seed}" if setting.teacher_seeds > 1 else folder
