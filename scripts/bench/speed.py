"""Time a distillation run against the floor: a plain PyTorch loop training the student alone.

    python -m scripts.bench speed                          # digits + Fashion-MNIST-sized data, this device
    python -m scripts.bench speed --dataset fashion_mnist --samples 20000 --epochs 4 --out docs/bench_speed.json

Configurations, all on the same tensors, batch size, student and optimizer:
  A  plain PyTorch loop, student alone (the floor on this machine)
  B  distill's Lightning module, student alone (CE)
  C  distill, KD with the live teacher
  D  distill, KD with cached teacher outputs
  E  distill, FitNet hint + CE with the live teacher (feature hooks, regressor)
  T  the teacher's inference alone over the same samples
  P  torchdistill's DistillationBox, KD with the live teacher (when torchdistill is installed: ".[bench]")
With --augment (Fashion-MNIST: pad-2 random crops and flips, its default), also:
  A+ the plain loop with the same augmentation
  C+ distill, KD with the live teacher on augmented batches
  F  distill, KD with the augmentation-aware teacher-output cache (every crop/flip variant cached)
Times are medians over epochs after the first (warm-up). Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F

from distill.data import DigitsDataModule, FashionMNISTDataModule, InMemoryDataModule
from distill.data.base import augment_batch
from distill.losses import build_loss_terms, kd_loss
from distill.measure import synchronize
from distill.models import create_model
from distill.module import DistillationModule
from distill.teacher.logits_cache import Variants, load_or_compute, teacher_outputs_key
from scripts.bench.peers import torchdistill_kd
from scripts.bench.stats import median_after_first


class EpochTimer(L.Callback):
    """Epoch times from one epoch's start to the next (the last: to the end of training), so an epoch includes
    the LightningModule's own ``on_train_epoch_end`` (its logging), which Lightning runs after the callbacks'
    hook; step times from batch start to batch end; gaps from a step's end to the next step's start (fetching
    the batch, moving it, Lightning's bookkeeping between steps)."""

    def __init__(self) -> None:
        self.epochs: list[float] = []
        self.steps: list[float] = []
        self.gaps: list[float] = []
        self._epoch: float | None = None
        self._step_end: float | None = None

    def _epoch_done(self, module) -> float:
        synchronize(module.device)
        now = time.perf_counter()
        if self._epoch is not None:
            self.epochs.append(now - self._epoch)
        return now

    def on_train_epoch_start(self, trainer, module) -> None:
        self._epoch = self._epoch_done(module)
        self._step_end = None

    def on_train_end(self, trainer, module) -> None:
        self._epoch_done(module)

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        self._step = time.perf_counter()
        if self._step_end is not None:
            self.gaps.append(self._step - self._step_end)

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        synchronize(module.device)
        self._step_end = time.perf_counter()
        self.steps.append(self._step_end - self._step)


def random_augmentation(padding: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """What a plain loop would do: a random crop offset and flip per image, drawn on the images' device."""
    def augment(images: torch.Tensor) -> torch.Tensor:
        n, span = len(images), 2 * padding + 1
        draws = {"offset_y": torch.randint(0, span, (n,), device=images.device),
                 "offset_x": torch.randint(0, span, (n,), device=images.device),
                 "flip": torch.rand(n, device=images.device) < 0.5}
        return augment_batch(images, padding, draws)
    return augment


def plain_loop(student, images, labels, batch_size, epochs, lr, device, augment=None, teacher_logits=None) -> dict:
    """(A) the floor: shuffled tensor batches, forward, cross-entropy, backward, SGD step.

    With ``teacher_logits`` (one row per training image), (K) the same loop minimising D's loss,
    ``0.1 CE + 0.9 KD(T=4)`` against those logits: what KD's own arithmetic costs without a framework.
    """
    student = student.to(device).train()
    optimizer = sgd(student.parameters(), lr)
    images, labels = images.to(device), labels.to(device)
    epoch_times, step_times = [], []
    for _ in range(epochs):
        start = time.perf_counter()
        order = torch.randperm(len(labels), device=device)
        for i in range(0, len(labels), batch_size):
            step = time.perf_counter()
            batch = order[i:i + batch_size]
            inputs = augment(images[batch]) if augment else images[batch]
            logits = student(inputs)
            loss = F.cross_entropy(logits, labels[batch])
            if teacher_logits is not None:
                loss = 0.1 * loss + 0.9 * kd_loss(logits, teacher_logits[batch], 4.0)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            synchronize(device)
            step_times.append(time.perf_counter() - step)
        epoch_times.append(time.perf_counter() - start)
    steps_per_epoch = -(-len(labels) // batch_size)
    return {"epoch_s": median_after_first(epoch_times), "step_ms": 1e3 * median_after_first(step_times,
                                                                                              steps_per_epoch)}


def sgd(params, lr: float = 0.05) -> torch.optim.Optimizer:
    """The one optimizer of every configuration (the loops, distill's module, the bare module)."""
    return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=5e-4, nesterov=True)


def lightning_fit(student, teacher, loss, data, args, accelerator, teacher_outputs=None) -> dict:
    module = DistillationModule(student, build_loss_terms(loss), sgd, data.num_classes, data.input_shape,
                                teacher=teacher, teacher_outputs=teacher_outputs, channels_last=args.channels_last,
                                compile_student=args.compile)
    return timed_fit(module, data, args, accelerator)


class BareModule(L.LightningModule):
    """(L) Lightning's own floor: a training step of forward and cross-entropy, nothing logged or recorded."""

    def __init__(self, student: torch.nn.Module) -> None:
        super().__init__()
        self.student = student

    def training_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> torch.Tensor:
        return F.cross_entropy(self.student(batch[0]), batch[1])

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return sgd(self.parameters())


def bare_lightning_fit(student, data, args, accelerator) -> dict:
    """(L) ``BareModule`` under the same Trainer settings and data loader as ``lightning_fit``."""
    return timed_fit(BareModule(student), data, args, accelerator)


def timed_fit(module: L.LightningModule, data, args, accelerator) -> dict:
    """Fit ``module`` for ``args.epochs`` (no validation, logger, checkpoints or progress bar) and time it."""
    timer = EpochTimer()
    trainer = L.Trainer(max_epochs=args.epochs, accelerator=accelerator, devices=1, logger=False,
                        precision=args.precision, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0, callbacks=[timer])
    trainer.fit(module, datamodule=data)
    steps_per_epoch = len(timer.steps) // args.epochs
    return {"epoch_s": median_after_first(timer.epochs),
            "step_ms": 1e3 * median_after_first(timer.steps, steps_per_epoch),
            "gap_ms": 1e3 * median_after_first(timer.gaps, steps_per_epoch - 1)}


def teacher_inference(teacher, images, batch_size, epochs, device) -> dict:
    teacher = teacher.to(device).eval()
    images = images.to(device)
    times = []
    for _ in range(epochs):
        start = time.perf_counter()
        with torch.no_grad():
            for i in range(0, len(images), batch_size):
                teacher(images[i:i + batch_size])
        synchronize(device)
        times.append(time.perf_counter() - start)
    return {"epoch_s": median_after_first(times)}


def subsample(data: InMemoryDataModule, samples: int | None) -> None:
    train = data.splits["train"]
    if samples and samples < len(train.labels):
        generator = torch.Generator().manual_seed(0)
        keep = torch.randperm(len(train.labels), generator=generator)[:samples]
        data.splits["train"] = type(train)(train.images[keep].contiguous(), train.labels[keep])


def bench_data(dataset: str, batch_size: int, fashion_root: str, samples: int | None) -> InMemoryDataModule:
    """Digits (all 1,293 training images) or ``samples`` Fashion-MNIST training images, set up."""
    data: InMemoryDataModule
    if dataset == "digits":
        data = DigitsDataModule(batch_size=batch_size)
    else:
        data = FashionMNISTDataModule(root=fashion_root, batch_size=batch_size, mean=[0.2860], std=[0.3530])
    data.setup()
    subsample(data, samples if dataset != "digits" else None)
    return data


def cached_outputs(cache: str, teacher: torch.nn.Module, dataset: str, data: InMemoryDataModule) -> Any:
    """The teacher's logits on the (unaugmented) training images, computed once into ``cache``."""
    train = data.splits["train"]
    key = teacher_outputs_key(teacher, {"dataset": dataset, "samples": len(train.labels)}, data.identity(), None, None)
    return load_or_compute(cache, key, teacher, {"train": train.images}, data.num_classes, None, None,
                           memory_mapped=False)


def bench(dataset: str, args: argparse.Namespace, device: torch.device) -> dict:
    data = bench_data(dataset, args.batch_size, args.fashion_root, args.samples)
    train = data.splits["train"]
    accelerator = "gpu" if device.type == "cuda" else "cpu"

    def student():
        torch.manual_seed(0)
        return create_model(args.student, data.num_classes, data.in_chans, {"width": 16} if args.student ==
                            "small_cnn" else {})

    torch.manual_seed(0)
    teacher = create_model(args.teacher, data.num_classes, data.in_chans).to(device).eval()
    results = {"A_plain_loop": plain_loop(student(), train.images, train.labels, args.batch_size, args.epochs,
                                          0.05, device)}
    results["T_teacher_inference"] = teacher_inference(teacher, train.images, args.batch_size, args.epochs, device)
    results["B_student_alone"] = lightning_fit(student(), None, {"ce": {"weight": 1.0}}, data, args, accelerator)
    kd = {"ce": {"weight": 0.1}, "kd": {"weight": 0.9, "temperature": 4.0}}
    results["C_kd_live_teacher"] = lightning_fit(student(), teacher, kd, data, args, accelerator)
    with tempfile.TemporaryDirectory() as cache:
        teacher.to(device)  # the module built for C moved it to the (CPU) student; build the cache on the device
        start = time.perf_counter()
        outputs = cached_outputs(cache, teacher, dataset, data)
        build_s = time.perf_counter() - start
        results["D_kd_cached_teacher"] = lightning_fit(student(), teacher, kd, data, args, accelerator,
                                                       teacher_outputs=outputs)
        results["D_kd_cached_teacher"].update({"cache_build_s": build_s, "cache_bytes": outputs.nbytes})
    fitnet = {"ce": {"weight": 1.0}, "fitnet": {"weight": 100.0, "student_layer": "@-2", "teacher_layer": "@-2"}}
    results["E_fitnet_live_teacher"] = lightning_fit(student(), teacher, fitnet, data, args, accelerator)
    peer = peer_kd(student(), teacher, train, args, device)
    if peer is not None:
        results["P_torchdistill_kd_live"] = peer
    a, t = results["A_plain_loop"]["epoch_s"], results["T_teacher_inference"]["epoch_s"]
    goals = GOALS[dataset]
    ratios = {
        f"B/A framework overhead (goal <= {goals['B/A']})": results["B_student_alone"]["epoch_s"] / a,
        "C/(A+T) live-teacher KD": results["C_kd_live_teacher"]["epoch_s"] / (a + t),
        f"D/A cached-teacher KD (goal <= {goals['D/A']})": results["D_kd_cached_teacher"]["epoch_s"] / a,
        "E/(A+T) FitNet, live teacher": results["E_fitnet_live_teacher"]["epoch_s"] / (a + t),
    }
    if peer is not None:
        ratios["C/P our live KD vs torchdistill's"] = results["C_kd_live_teacher"]["epoch_s"] / peer["epoch_s"]
        ratios["D/P our cached KD vs torchdistill's"] = results["D_kd_cached_teacher"]["epoch_s"] / peer["epoch_s"]
    if args.augment and dataset != "digits":
        results.update(augmented(data, student, teacher, kd, args, accelerator, device))
        a_aug = results["A+_plain_loop_augmented"]["epoch_s"]
        ratios["C+/A+ live-teacher KD, augmented"] = results["C+_kd_live_teacher_augmented"]["epoch_s"] / a_aug
        ratios["F/A+ augmentation-aware cached KD (goal <= 1.15)"] = results["F_kd_cached_augmented"]["epoch_s"] / a_aug
    return {"dataset": dataset, "train_samples": len(train.labels), "input_shape": list(data.input_shape),
            "options": {"precision": args.precision, "channels_last": args.channels_last, "compile": args.compile},
            "batch_size": args.batch_size, "epochs": args.epochs, "student": args.student, "teacher": args.teacher,
            "results": results, "ratios": ratios}


GOALS = {"digits": {"B/A": 1.25, "D/A": 1.30}, "fashion_mnist": {"B/A": 1.10, "D/A": 1.10}}


def peer_kd(student, teacher, train, args, device) -> dict | None:
    """(P) torchdistill's KD step on the same models, tensors and batch size; None when it is not installed."""
    try:
        return torchdistill_kd(student, teacher, train.images, train.labels, args.batch_size, args.epochs, device)
    except ImportError as error:
        print(f"note: no torchdistill comparison ({error})")
        return None


def augmented(data, student, teacher, kd, args, accelerator, device) -> dict:
    """(A+, C+, F) the same runs with the data's pad-and-crop + flip augmentation on every training batch."""
    data.random_crop_padding, data.horizontal_flip = 2, True
    train = data.splits["train"]
    results = {"A+_plain_loop_augmented": plain_loop(student(), train.images, train.labels, args.batch_size,
                                                     args.epochs, 0.05, device, random_augmentation(2))}
    results["C+_kd_live_teacher_augmented"] = lightning_fit(student(), teacher, kd, data, args, accelerator)
    with tempfile.TemporaryDirectory() as cache:
        teacher.to(device)
        start = time.perf_counter()
        variants = Variants(data.augmentation_variants, data.augment_variant)
        key = teacher_outputs_key(teacher, {"samples": len(train.labels), "augmented": True}, data.identity(), None,
                                  None, variants.count)
        outputs = load_or_compute(cache, key, teacher, {"train": train.images}, data.num_classes, None, None,
                                  memory_mapped=False, train_variants=variants)
        build_s = time.perf_counter() - start
        results["F_kd_cached_augmented"] = lightning_fit(student(), teacher, kd, data, args, accelerator,
                                                         teacher_outputs=outputs)
        results["F_kd_cached_augmented"].update({"cache_build_s": build_s, "cache_bytes": outputs.nbytes,
                                                 "variants": variants.count,
                                                 "bytes_per_image": outputs.nbytes / len(train.labels)})
    data.random_crop_padding, data.horizontal_flip = 0, False
    return results


def print_table(result: dict) -> None:
    print(f"\n{result['dataset']}: {result['train_samples']} training images {tuple(result['input_shape'])}, "
          f"batch {result['batch_size']}, {result['student']} <- {result['teacher']}, "
          f"median of epochs 2..{result['epochs']}, options {result['options']}")
    print(f"  {'configuration':<32}{'epoch (s)':>12}{'step (ms)':>12}")
    for name, values in result["results"].items():
        step = values.get("step_ms")
        print(f"  {name:<32}{values['epoch_s']:>12.3f}{(f'{step:.2f}' if step else ''):>12}")
    cache = result["results"]["D_kd_cached_teacher"]
    print(f"  teacher-output cache: {cache['cache_bytes'] / 2**20:.2f} MiB, built in {cache['cache_build_s']:.2f} s")
    if "F_kd_cached_augmented" in result["results"]:
        cache = result["results"]["F_kd_cached_augmented"]
        print(f"  augmentation-aware cache: {cache['variants']} variants, {cache['bytes_per_image']:.0f} bytes per "
              f"image, {cache['cache_bytes'] / 2**20:.2f} MiB, built in {cache['cache_build_s']:.2f} s")
    for name, value in result["ratios"].items():
        print(f"  {name:<52}{value:>8.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=["digits", "fashion_mnist", "both"], default="both")
    parser.add_argument("--fashion-root", default="/usr/share/datasets/fashion-mnist")
    parser.add_argument("--samples", type=int, default=10000, help="Fashion-MNIST training images used (max 55000)")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--student", default="small_cnn")
    parser.add_argument("--teacher", default="cifar_resnet20")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="32-true", help="Lightning precision for B-E, e.g. bf16-mixed")
    parser.add_argument("--channels-last", action="store_true", help="NHWC layout for the student (and teacher)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the student in B-E")
    parser.add_argument("--augment", action="store_true",
                        help="also time A+, C+ and F on Fashion-MNIST with its default augmentation")
    parser.add_argument("--out", type=Path, default=Path("bench_speed.json"))
    args = parser.parse_args()
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device)
    datasets = ["digits", "fashion_mnist"] if args.dataset == "both" else [args.dataset]
    results = [bench(name, args, device) for name in datasets]
    for result in results:
        print_table(result)
    machine = {"device": str(device), "device_name": torch.cuda.get_device_name(device) if device.type == "cuda"
               else platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
               "torch": torch.__version__, "lightning": L.__version__, "command": " ".join(sys.argv)}
    args.out.write_text(json.dumps({"machine": machine, "benchmarks": results}, indent=2) + "\n")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
